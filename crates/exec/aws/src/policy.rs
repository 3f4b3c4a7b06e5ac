//! The session policy and session name of a lease.
//!
//! STS intersects the session policy with the role's own policies, so the temporary credentials
//! can do at most what both allow: a lease never gets more than its scope on its buckets, even
//! when the role is wider.

use airlock_core::config::Scope;
use serde::Serialize;

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "Version")]
    version: &'static str,
    #[serde(rename = "Statement")]
    statement: [Statement<'a>; 2],
}

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "Sid")]
    sid: &'static str,
    #[serde(rename = "Effect")]
    effect: &'static str,
    #[serde(rename = "Action")]
    action: &'a [&'static str],
    #[serde(rename = "Resource")]
    resource: Vec<String>,
}

/// The inline session policy of a lease: `s3:ListBucket` on each bucket, and on their objects
/// `s3:GetObject` (`read_only`) or `s3:GetObject`, `s3:PutObject` and `s3:DeleteObject`
/// (`read_write`). Nothing else. `partition` is the role ARN's (`aws`, `aws-cn`, `aws-us-gov`).
/// Bucket names are checked at load time (no `*`, `?` or quotes can appear).
pub fn session_policy(partition: &str, scope: Scope, buckets: &[String]) -> String {
    let objects: &[&'static str] = match scope {
        Scope::ReadOnly => &["s3:GetObject"],
        Scope::ReadWrite => &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
    };
    let doc = Document {
        version: "2012-10-17",
        statement: [
            Statement {
                sid: "ListLeasedBuckets",
                effect: "Allow",
                action: &["s3:ListBucket"],
                resource: buckets.iter().map(|b| format!("arn:{partition}:s3:::{b}")).collect(),
            },
            Statement {
                sid: "ObjectsInLeasedBuckets",
                effect: "Allow",
                action: objects,
                resource: buckets.iter().map(|b| format!("arn:{partition}:s3:::{b}/*")).collect(),
            },
        ],
    };
    serde_json::to_string(&doc).expect("the policy serializes")
}

/// The STS session name of a lease: `{agent}@{lease id}`, the agent name cut to fit STS's
/// 64 characters (`[\w+=,.@-]`), so that CloudTrail entries tie back to the audit log.
pub fn session_name(agent: &str, lease_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) { c } else { '-' })
            .collect()
    };
    let id: String = clean(lease_id).chars().take(40).collect();
    let room = 64 - 1 - id.len();
    let agent: String = clean(agent).chars().take(room).collect();
    format!("{agent}@{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_lease_gets_get_and_list_on_its_buckets_only() {
        assert_eq!(
            session_policy("aws", Scope::ReadOnly, &["reports".into()]),
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"ListLeasedBuckets","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::reports"]},{"Sid":"ObjectsInLeasedBuckets","Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::reports/*"]}]}"#
        );
    }

    #[test]
    fn a_read_write_lease_adds_put_and_delete_and_nothing_else() {
        assert_eq!(
            session_policy("aws-cn", Scope::ReadWrite, &["a-1".into(), "b.2".into()]),
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"ListLeasedBuckets","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws-cn:s3:::a-1","arn:aws-cn:s3:::b.2"]},{"Sid":"ObjectsInLeasedBuckets","Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],"Resource":["arn:aws-cn:s3:::a-1/*","arn:aws-cn:s3:::b.2/*"]}]}"#
        );
    }

    #[test]
    fn session_names_carry_agent_and_lease_within_stss_limits() {
        let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(session_name("report-bot", id), format!("report-bot@{id}"));
        let long = "a".repeat(64);
        let n = session_name(&long, id);
        assert_eq!(n.len(), 64);
        assert!(n.ends_with(&format!("@{id}")));
        assert!(session_name("x y/z", id).starts_with("x-y-z@"));
        assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
    }
}
