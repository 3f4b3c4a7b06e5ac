//! One decision with 10 and with 1,000 agents' grants loaded: the engine's per-agent slice
//! against a naive set holding every policy (same request, same entities).

use airlock_core::config::{Config, Handle};
use airlock_core::{HandleName, Tool};
use airlock_policy::PolicyEngine;
use cedar_policy::{Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

const HANDLES: usize = 50;

/// `agents` agents, each granted `query_db` on two of `HANDLES` database handles.
fn config(agents: usize) -> Config {
    let mut t = String::new();
    for i in 0..HANDLES {
        t.push_str(&format!("[handles.DB_{i}]\nkind = \"postgres\"\nsecret = \"env:DB_{i}\"\n"));
    }
    for a in 0..agents {
        t.push_str(&format!(
            "[agents.agent-{a}]\ngrants = [{{ handle = \"DB_{}\", tools = [\"query_db\"] }}, {{ handle = \"DB_{}\", tools = [\"query_db\"] }}]\n",
            a % HANDLES,
            (a + 1) % HANDLES
        ));
    }
    Config::parse(&t, "bench.toml", Path::new(".")).unwrap()
}

fn naive_decide(auth: &Authorizer, all: &PolicySet, agent: &str, handle: &Handle) -> bool {
    let p = EntityUid::from_str(&format!("Airlock::Agent::\"{agent}\"")).unwrap();
    let r = EntityUid::from_str(&format!("Airlock::Handle::\"{}\"", handle.name)).unwrap();
    let a = EntityUid::from_str("Airlock::Action::\"query_db\"").unwrap();
    let pe = Entity::new(p.clone(), HashMap::from([("name".into(), RestrictedExpression::new_string(agent.into()))]), HashSet::new()).unwrap();
    let re = Entity::new(
        r.clone(),
        HashMap::from([
            ("kind".into(), RestrictedExpression::new_string("postgres".into())),
            ("scope".into(), RestrictedExpression::new_string("read_only".into())),
        ]),
        HashSet::new(),
    )
    .unwrap();
    let entities = Entities::from_entities([pe, re], None).unwrap();
    let req = Request::new(p, a, r, Context::empty(), None).unwrap();
    auth.is_authorized(&req, all, &entities).decision() == cedar_policy::Decision::Allow
}

fn bench(c: &mut Criterion) {
    for agents in [10, 1000] {
        let cfg = config(agents);
        let engine = PolicyEngine::from_config(&cfg).unwrap();
        let all = PolicySet::from_str(engine.generated_policies()).unwrap();
        let auth = Authorizer::new();
        // The last agent, so nothing favours an early match.
        let agent = format!("agent-{}", agents - 1);
        let handle = &cfg.handles[&HandleName::parse(&format!("DB_{}", (agents - 1) % HANDLES)).unwrap()];
        assert!(engine.decide(&agent, Tool::QueryDb, handle).allowed);
        assert!(naive_decide(&auth, &all, &agent, handle));

        let mut g = c.benchmark_group(format!("decide/{agents}_agents_{}_policies", engine.policy_count()));
        g.bench_function("sliced", |b| b.iter(|| engine.decide(black_box(&agent), Tool::QueryDb, black_box(handle))));
        g.bench_function("naive_all_policies", |b| b.iter(|| naive_decide(&auth, &all, black_box(&agent), black_box(handle))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
