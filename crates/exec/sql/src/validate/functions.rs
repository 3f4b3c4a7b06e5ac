//! The functions a statement may call, per dialect (T25, T26).
//!
//! Functions are allowed by name from a curated list, never refused from a deny list: a function
//! an extension or a user adds (tablefunc's `crosstab` and `connectby`, xml2's `xpath_table`,
//! `dblink`, any user-defined function) is refused until the handle names it in
//! `allow_functions`. A built-in list holds only functions that read nothing but their
//! arguments and change nothing: string, numeric, date/time, JSON, array, aggregate, window and
//! conditional functions. Left out on purpose: anything that reads a table, a catalog or a file
//! by name or OID (`query_to_xml`, `to_regclass`, `pg_read_file`, `load_file`), server settings
//! and session state (`current_setting`, `set_config`, `changes()`), other sessions (`pg_*stat*`,
//! `connection_id`), time oracles and locks (`pg_sleep`, `sleep`, `benchmark`, `get_lock`),
//! sequences and large objects, extension loading.
//!
//! Names resolve as the server resolves them: PostgreSQL folds an unquoted name to lower case
//! and keeps a quoted one as written; MySQL/MariaDB and SQLite compare function names without
//! case. A qualified name resolves to a built-in only when its schema is the server's own
//! catalog (`pg_catalog.lower`); MySQL and SQLite built-ins are never qualified, so any other
//! qualification needs an exact `allow_functions = ["schema.name"]` entry.
//!
//! The lists are sorted (checked by a test) and each name is one the server has: the
//! integration tests walk the real function catalogues (PostgreSQL `pg_proc`, MariaDB
//! `information_schema.SQL_FUNCTIONS` and `mysql.help_topic`, SQLite `PRAGMA function_list`),
//! refuse everything not listed and find every listed name, or find it in [`Lists::syntax`].

use airlock_core::config::{DatabaseConstraints, HandleKind};
use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

/// One dialect's function lists.
pub struct Lists {
    /// Allowed on every handle.
    pub builtin: &'static [&'static str],
    /// Allowed with `allow_catalogs = true`: catalog and session introspection.
    pub catalog: &'static [&'static str],
    /// Names of `builtin` and `catalog` that are SQL syntax rather than catalogue functions
    /// (`coalesce`, `current_date`): the catalogue tests do not expect to find them.
    pub syntax: &'static [&'static str],
    /// Functions that change data or state (sequences, large objects, advisory locks). Never
    /// built in; when a handle allows one explicitly, a statement calling it is a write.
    pub writes: &'static [&'static str],
    /// Prefixes of more such functions (`lo_` for large objects).
    pub write_prefixes: &'static [&'static str],
    /// The schema that holds the built-ins, when names may be qualified with it.
    pub catalog_schema: Option<&'static str>,
}

/// Where an allowed call's name was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The dialect's built-in list (or its catalog list under `allow_catalogs`).
    Builtin,
    /// The handle's `allow_functions`.
    Handle,
}

/// An allowed call: its name as the server compares it, and where it was allowed.
#[derive(Debug)]
pub struct Allowed {
    /// Lower-cased last part of the name.
    pub name: String,
    /// Where it was found.
    pub origin: Origin,
}

/// The lists of one dialect.
pub fn lists(kind: HandleKind) -> &'static Lists {
    match kind {
        HandleKind::Postgres => &POSTGRES,
        HandleKind::Mysql => &MYSQL,
        _ => &SQLITE,
    }
}

/// Whether `name` (lower case, unqualified) changes data or state in this dialect.
pub fn writes(kind: HandleKind, name: &str) -> bool {
    let l = lists(kind);
    l.writes.binary_search(&name).is_ok() || l.write_prefixes.iter().any(|p| name.starts_with(p))
}

/// How the server compares a function name's part: PostgreSQL keeps a quoted name as written
/// and folds an unquoted one; the others ignore case.
fn key(kind: HandleKind, i: &Ident) -> String {
    if kind == HandleKind::Postgres && i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Resolves a called name against the dialect's lists and the handle's `allow_functions`;
/// `None` when the call is not allowed.
pub fn resolve(kind: HandleKind, db: &DatabaseConstraints, name: &ObjectName) -> Option<Allowed> {
    let mut parts = Vec::with_capacity(name.0.len());
    for p in &name.0 {
        match p {
            ObjectNamePart::Identifier(i) => parts.push(key(kind, i)),
            _ => return None,
        }
    }
    let l = lists(kind);
    let builtin = |f: &str| {
        l.builtin.binary_search(&f).is_ok()
            || (db.allow_catalogs && l.catalog.binary_search(&f).is_ok())
    };
    let handle = |f: &str| db.allow_functions.iter().any(|a| a.to_lowercase() == f);
    match parts.as_slice() {
        [f] if builtin(f) => Some(Allowed {
            name: f.clone(),
            origin: Origin::Builtin,
        }),
        [f] if handle(f) => Some(Allowed {
            name: f.clone(),
            origin: Origin::Handle,
        }),
        [s, f] if Some(s.as_str()) == l.catalog_schema && builtin(f) => Some(Allowed {
            name: f.clone(),
            origin: Origin::Builtin,
        }),
        [s, f] if handle(&format!("{s}.{f}")) => Some(Allowed {
            name: f.clone(),
            origin: Origin::Handle,
        }),
        _ => None,
    }
}

/// PostgreSQL 15 and later.
#[rustfmt::skip]
static POSTGRES: Lists = Lists {
    builtin: &[
        "abs", "acos", "acosd", "acosh", "age", "array", "array_agg", "array_append", "array_cat",
        "array_dims", "array_fill", "array_length", "array_lower", "array_ndims", "array_position",
        "array_positions", "array_prepend", "array_remove", "array_replace", "array_to_json",
        "array_to_string", "array_upper", "ascii", "asin", "asind", "asinh", "atan", "atan2",
        "atan2d", "atand", "atanh", "avg", "bit_and", "bit_count", "bit_length", "bit_or",
        "bit_xor", "bool_and", "bool_or", "btrim", "cardinality", "cbrt", "ceil", "ceiling",
        "char_length", "character_length", "chr", "clock_timestamp", "coalesce", "concat",
        "concat_ws", "convert", "convert_from", "convert_to", "corr", "cos", "cosd", "cosh", "cot",
        "cotd", "count", "covar_pop", "covar_samp", "cume_dist", "current_date", "current_time",
        "current_timestamp", "date", "date_bin", "date_part", "date_trunc", "decode", "degrees",
        "dense_rank", "div", "encode", "every", "exp", "extract", "factorial", "first_value",
        "float8", "floor", "format", "gcd", "gen_random_uuid", "generate_series",
        "generate_subscripts", "get_bit", "get_byte", "greatest", "grouping", "initcap", "int4",
        "int8", "is_normalized", "isempty", "isfinite", "json_agg", "json_array_elements",
        "json_array_elements_text", "json_array_length", "json_build_array", "json_build_object",
        "json_each", "json_each_text", "json_extract_path", "json_extract_path_text",
        "json_object", "json_object_agg", "json_object_keys", "json_strip_nulls",
        "json_to_record", "json_to_recordset", "json_typeof", "jsonb_agg",
        "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length",
        "jsonb_build_array", "jsonb_build_object", "jsonb_each", "jsonb_each_text",
        "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert", "jsonb_object",
        "jsonb_object_agg", "jsonb_object_keys", "jsonb_path_exists", "jsonb_path_exists_tz",
        "jsonb_path_match", "jsonb_path_match_tz", "jsonb_path_query", "jsonb_path_query_array",
        "jsonb_path_query_array_tz", "jsonb_path_query_first", "jsonb_path_query_first_tz",
        "jsonb_path_query_tz", "jsonb_pretty", "jsonb_set", "jsonb_set_lax", "jsonb_strip_nulls",
        "jsonb_to_record", "jsonb_to_recordset", "jsonb_typeof", "justify_days", "justify_hours",
        "justify_interval", "lag", "last_value", "lcm", "lead", "least", "left", "length", "ln",
        "localtime", "localtimestamp", "log", "log10", "lower", "lower_inc", "lower_inf", "lpad",
        "ltrim", "make_date", "make_interval", "make_time", "make_timestamp", "make_timestamptz",
        "max", "md5", "min", "min_scale", "mod", "mode", "normalize", "now", "nth_value",
        "ntile", "nullif", "num_nonnulls", "num_nulls", "numeric", "octet_length", "overlay",
        "parse_ident", "percent_rank", "percentile_cont", "percentile_disc", "pg_column_size",
        "pg_size_bytes", "pg_size_pretty", "pg_typeof", "pi", "position", "pow", "power",
        "quote_ident", "quote_literal", "quote_nullable", "radians", "random", "range_agg",
        "range_intersect_agg", "range_merge", "rank", "regexp_count", "regexp_instr",
        "regexp_like", "regexp_match", "regexp_matches", "regexp_replace",
        "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "regr_avgx",
        "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx",
        "regr_sxy", "regr_syy", "repeat", "replace", "reverse", "right", "round", "row",
        "row_number", "row_to_json", "rpad", "rtrim", "scale", "sha224", "sha256", "sha384",
        "sha512", "sign", "sin", "sind", "sinh", "split_part", "sqrt", "starts_with",
        "statement_timestamp", "stddev", "stddev_pop", "stddev_samp", "string_agg",
        "string_to_array", "string_to_table", "strpos", "substr", "substring", "sum", "tan",
        "tand", "tanh", "text", "timeofday", "timezone", "to_ascii", "to_char", "to_date",
        "to_hex", "to_json", "to_jsonb", "to_number", "to_timestamp", "transaction_timestamp",
        "translate", "trim", "trim_array", "trim_scale", "trunc", "unistr", "unnest", "upper",
        "upper_inc", "upper_inf", "var_pop", "var_samp", "variance", "version", "width_bucket",
    ],
    catalog: &[
        "col_description", "current_database", "current_role", "current_schema", "current_schemas",
        "current_user", "format_type",
        "has_any_column_privilege", "has_column_privilege", "has_database_privilege",
        "has_function_privilege", "has_schema_privilege", "has_sequence_privilege",
        "has_table_privilege", "has_type_privilege", "obj_description", "pg_collation_is_visible",
        "pg_conversion_is_visible", "pg_describe_object", "pg_encoding_to_char",
        "pg_function_is_visible", "pg_get_constraintdef", "pg_get_expr",
        "pg_get_function_arguments", "pg_get_function_identity_arguments",
        "pg_get_function_result", "pg_get_functiondef", "pg_get_indexdef", "pg_get_keywords",
        "pg_get_partition_constraintdef", "pg_get_partkeydef", "pg_get_ruledef",
        "pg_get_serial_sequence", "pg_get_statisticsobjdef", "pg_get_triggerdef",
        "pg_get_userbyid", "pg_get_viewdef", "pg_identify_object", "pg_index_column_has_property",
        "pg_index_has_property", "pg_indexam_has_property", "pg_indexes_size",
        "pg_opclass_is_visible", "pg_operator_is_visible", "pg_relation_size", "pg_table_is_visible",
        "pg_table_size", "pg_total_relation_size", "pg_type_is_visible", "session_user",
        "shobj_description", "to_regclass", "to_regcollation", "to_regnamespace", "to_regoper",
        "to_regoperator", "to_regproc", "to_regprocedure", "to_regrole", "to_regtype", "user",
    ],
    syntax: &[
        "array", "coalesce", "current_date", "current_role", "current_time", "current_timestamp",
        "greatest", "grouping", "least", "localtime", "localtimestamp", "nullif", "row", "trim",
        "user",
    ],
    writes: &[
        "loread", "lowrite", "nextval", "pg_advisory_lock", "pg_advisory_lock_shared",
        "pg_advisory_unlock", "pg_advisory_unlock_all", "pg_advisory_unlock_shared",
        "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_notify",
        "pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared", "set_config", "setseed", "setval",
    ],
    write_prefixes: &["lo_"],
    catalog_schema: Some("pg_catalog"),
};

/// MySQL 8 and MariaDB 10.6 and later.
#[rustfmt::skip]
static MYSQL: Lists = Lists {
    builtin: &[
        "abs", "acos", "adddate", "addtime", "ascii", "asin", "atan", "atan2", "avg", "bin",
        "bit_and", "bit_count", "bit_length", "bit_or", "bit_xor", "ceil", "ceiling", "char",
        "char_length", "character_length", "chr", "coalesce", "concat", "concat_ws", "conv",
        "convert_tz", "cos", "cot", "count", "crc32", "cume_dist", "curdate", "current_date",
        "current_time", "current_timestamp", "curtime", "date", "date_add", "date_format",
        "date_sub", "datediff", "day", "dayname", "dayofmonth", "dayofweek", "dayofyear",
        "degrees", "dense_rank", "elt", "exp", "export_set", "field", "find_in_set", "first_value",
        "floor", "format", "from_base64", "from_days", "from_unixtime", "get_format",
        "greatest", "group_concat", "hex", "hour", "if", "ifnull", "inet6_aton", "inet6_ntoa",
        "inet_aton", "inet_ntoa", "insert", "instr", "is_ipv4", "is_ipv4_compat",
        "is_ipv4_mapped", "is_ipv6", "isnull", "json_array", "json_array_append",
        "json_array_insert", "json_arrayagg", "json_contains", "json_contains_path", "json_depth",
        "json_extract", "json_insert", "json_keys", "json_length", "json_merge",
        "json_merge_patch", "json_merge_preserve", "json_object", "json_objectagg",
        "json_overlaps", "json_pretty", "json_quote", "json_remove", "json_replace",
        "json_search", "json_set", "json_type", "json_unquote", "json_valid", "json_value", "lag",
        "last_day", "last_value", "lcase", "lead", "least", "left", "length", "ln", "localtime",
        "localtimestamp", "locate", "log", "log10", "log2", "lower", "lpad", "ltrim", "make_set",
        "makedate", "maketime", "max", "md5", "microsecond", "mid", "min", "minute", "mod",
        "month", "monthname", "now", "nth_value", "ntile", "nullif", "oct", "octet_length",
        "ord", "percent_rank", "period_add", "period_diff", "pi", "position", "pow", "power",
        "quarter", "quote", "radians", "rand", "rank", "regexp_instr", "regexp_replace",
        "regexp_substr", "repeat", "replace", "reverse", "right", "round", "row_number", "rpad",
        "rtrim", "sec_to_time", "second", "sha", "sha1", "sha2", "sign", "sin", "soundex",
        "space", "sqrt", "std", "stddev", "stddev_pop", "stddev_samp", "str_to_date", "strcmp",
        "subdate", "substr", "substring", "substring_index", "subtime", "sum", "sysdate", "tan",
        "time", "time_format", "time_to_sec", "timediff", "timestamp", "timestampadd",
        "timestampdiff", "to_base64", "to_days", "to_seconds", "trim", "truncate", "ucase",
        "unhex", "unix_timestamp", "upper", "utc_date", "utc_time", "utc_timestamp", "uuid",
        "values", "var_pop", "var_samp", "variance", "version", "week", "weekday", "weekofyear",
        "weight_string", "year", "yearweek",
    ],
    catalog: &[
        "charset", "coercibility", "collation", "current_role", "current_user", "database",
        "schema", "session_user", "system_user", "user",
    ],
    syntax: &["time", "timestamp", "values"],
    writes: &["get_lock", "nextval", "release_all_locks", "release_lock", "setval"],
    write_prefixes: &[],
    catalog_schema: None,
};

/// SQLite 3.46 and later, as bundled by sqlx.
#[rustfmt::skip]
static SQLITE: Lists = Lists {
    // The math functions (sin, sqrt, ...) are left out: the SQLite sqlx bundles is built without
    // SQLITE_ENABLE_MATH_FUNCTIONS, so they do not exist there.
    builtin: &[
        "abs", "avg", "char", "coalesce", "concat", "concat_ws", "count", "cume_dist",
        "current_date", "current_time", "current_timestamp", "date", "datetime", "dense_rank",
        "first_value", "format", "glob", "group_concat", "hex", "ifnull", "iif", "instr", "json",
        "json_array", "json_array_length", "json_each", "json_error_position", "json_extract",
        "json_group_array", "json_group_object", "json_insert", "json_object", "json_patch",
        "json_quote", "json_remove", "json_replace", "json_set", "json_tree", "json_type",
        "json_valid", "jsonb", "jsonb_array", "jsonb_extract", "jsonb_group_array",
        "jsonb_group_object", "jsonb_insert", "jsonb_object", "jsonb_patch", "jsonb_remove",
        "jsonb_replace", "jsonb_set", "julianday", "lag", "last_value", "lead", "length", "like",
        "likelihood", "likely", "lower", "ltrim", "max", "min", "nth_value", "ntile", "nullif",
        "octet_length", "percent_rank", "printf", "quote", "random", "randomblob", "rank",
        "replace", "round", "row_number", "rtrim", "sign", "strftime", "string_agg", "substr",
        "substring", "sum", "time", "timediff", "total", "trim", "typeof", "unhex", "unicode",
        "unixepoch", "unlikely", "upper", "zeroblob",
    ],
    catalog: &["sqlite_compileoption_get", "sqlite_compileoption_used", "sqlite_source_id", "sqlite_version"],
    syntax: &[],
    writes: &[],
    write_prefixes: &[],
    catalog_schema: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_unique_lower_case_and_disjoint() {
        for kind in [HandleKind::Postgres, HandleKind::Mysql, HandleKind::Sqlite] {
            let l = lists(kind);
            for (what, list) in [
                ("builtin", l.builtin),
                ("catalog", l.catalog),
                ("syntax", l.syntax),
                ("writes", l.writes),
            ] {
                assert!(
                    list.windows(2).all(|w| w[0] < w[1]),
                    "{kind:?} {what} is not sorted and unique"
                );
                assert!(
                    list.iter().all(|f| !f.is_empty()
                        && f.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')),
                    "{kind:?} {what}"
                );
            }
            for f in l.builtin {
                assert!(
                    l.catalog.binary_search(f).is_err(),
                    "{kind:?} {f} is in builtin and catalog"
                );
                assert!(
                    !writes(kind, f),
                    "{kind:?} {f} changes data but is built in"
                );
            }
            for f in l.catalog {
                assert!(
                    !writes(kind, f),
                    "{kind:?} {f} changes data but is a catalog function"
                );
            }
            for f in l.syntax {
                assert!(
                    l.builtin.binary_search(f).is_ok() || l.catalog.binary_search(f).is_ok(),
                    "{kind:?} syntax {f} is not listed"
                );
            }
        }
    }
}
