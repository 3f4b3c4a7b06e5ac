//! The code order of the release `airlock` binary (`link/code-order.txt`): the functions
//! `airlock serve` runs from its start through its first calls, read from a callgrind trace, one
//! symbol per line, for the linker to place side by side (`build.rs` passes the file to lld as
//! `--symbol-ordering-file`).
//!
//! Why: the kernel maps a binary's code into a process 64 KB at a time around each page it
//! touches, so the code a broker has resident depends on how far apart the functions it runs
//! lie, not on how much of them it runs. Scattered over the 28 MB of code, the start touched
//! about 260 windows (16 MB resident) for about 6 MB of functions.
//!
//! The names are the binary's own symbols (mangled, with their hashes), and a hash moves with
//! its crate's metadata: a dependency added or upgraded, another compiler, or `airlock` built in
//! one command with other packages (`cargo build -p airlock -p airlock-bench` unifies the
//! dependencies' features differently from `cargo build -p airlock`, which is how `cargo run
//! --release` and `cargo install` build it, so the order is taken from that build). A line
//! whose name moved matches nothing and the linker ignores it. [`coverage`] says how many still
//! match (`airlock-bench footprint` prints it); `airlock-bench code-order` writes the file
//! again.

use std::collections::{HashMap, HashSet};

/// The header written above the symbols (lld skips lines starting with `#`).
pub const HEADER: &str = "\
# The functions `airlock serve` runs from its start through its first calls, for lld's
# --symbol-ordering-file (build.rs, release builds): placed side by side, they are mapped in
# with fewer of the kernel's 64 KB windows. Written by `cargo run --release -p airlock-bench
# --bin airlock-bench -- code-order` from a callgrind trace of the release build made by
# `cargo build --release -p airlock` alone; README \"Benchmarks\" says what it changes. A name
# that no longer matches a symbol is ignored.
";

/// The functions of the object whose path ends with `object` that have a cost in the
/// callgrind profile `trace` (`--demangle=no`, so the names are the symbols), in the order the
/// profile first names them; a recursion level's suffix (`'2`) is dropped, each name once.
pub fn functions_of(trace: &str, object: &str) -> Vec<String> {
    // Callgrind compresses names: `fn=(12) name` defines id 12, a later `fn=(12)` refers to it;
    // `cfn=`/`cob=` (a call's target) define ids of the same tables.
    let mut objects: HashMap<&str, &str> = HashMap::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut in_object = false;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let (key, rest) = match line.split_once('=') {
            Some((k @ ("ob" | "fn" | "cob" | "cfn"), rest)) => (k, rest),
            _ => continue,
        };
        let (id, name) = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((id, name)) => (id, name.trim()),
            None => continue,
        };
        let table = if key.ends_with("ob") { &mut objects } else { &mut names };
        if !name.is_empty() {
            table.insert(id, name);
        }
        match key {
            "ob" => in_object = objects.get(id).is_some_and(|o| o.ends_with(object)),
            "fn" if in_object => {
                if let Some(n) = names.get(id) {
                    let n = strip_recursion(n);
                    if is_symbol(n) && seen.insert(n) {
                        out.push(n.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether callgrind's name for a function is a symbol the linker can place: not an address
/// without a symbol (`0x00000000008721e0`) nor callgrind's own names (`(below main)`).
fn is_symbol(name: &str) -> bool {
    !name.is_empty() && !name.starts_with("0x") && !name.starts_with('(') && !name.contains(char::is_whitespace)
}

/// `name'3` (callgrind's name for the third level of a recursion) → `name`.
fn strip_recursion(name: &str) -> &str {
    match name.rsplit_once('\'') {
        Some((base, level)) if !level.is_empty() && level.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// Of the names in an order file (`#` lines and blank lines skipped), how many are among
/// `symbols`, and how many there are.
pub fn coverage(order_file: &str, symbols: &HashSet<String>) -> (usize, usize) {
    let listed: Vec<&str> = order_file.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    (listed.iter().filter(|l| symbols.contains(**l)).count(), listed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
# callgrind format
version: 1
events: Ir
ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
fn=(1) malloc
5 10
ob=(2) /tmp/x/target/release/airlock
fn=(2) _ZN4main17h0123456789abcdefE
3 4
cob=(1)
cfn=(1)
calls=1 0
3 10
cfn=(3) _ZN5tokio3run17h1111111111111111E
calls=1 0
4 5
fn=(3)
1 1
fn=(4) _ZN3rec17h2222222222222222E'2
1 1
fn=(5) _ZN3rec17h2222222222222222E
1 1
ob=(1)
fn=(6) free
1 1
ob=(2)
fn=(2)
1 1
fn=(7) 0x00000000008721e0
1 1
fn=(8) (below main)
1 1
";

    #[test]
    fn the_binarys_functions_once_each_in_first_order() {
        let f = functions_of(TRACE, "/airlock");
        assert_eq!(
            f,
            ["_ZN4main17h0123456789abcdefE", "_ZN5tokio3run17h1111111111111111E", "_ZN3rec17h2222222222222222E"]
        );
    }

    #[test]
    fn addresses_and_callgrinds_own_names_are_not_listed() {
        let f = functions_of(TRACE, "/airlock");
        assert!(!f.iter().any(|n| n.starts_with("0x") || n.contains("below main")), "{f:?}");
        assert!(is_symbol("_ZN4main17h0123456789abcdefE") && is_symbol("sqlite3_malloc64"));
    }

    #[test]
    fn another_objects_functions_and_callees_alone_are_not_listed() {
        let f = functions_of(TRACE, "/airlock");
        assert!(!f.iter().any(|n| n == "malloc" || n == "free"));
        // A function only ever named as a callee (cfn=) has no cost of its own in the object.
        let only_called = "ob=(1) /x/airlock\nfn=(1) a\ncfn=(2) b\ncalls=1 0\n1 1\n";
        assert_eq!(functions_of(only_called, "/airlock"), ["a"]);
    }

    #[test]
    fn recursion_suffixes_are_stripped_and_nothing_else() {
        assert_eq!(strip_recursion("f'2"), "f");
        assert_eq!(strip_recursion("f'12"), "f");
        assert_eq!(strip_recursion("f'"), "f'");
        assert_eq!(strip_recursion("f'x"), "f'x");
        assert_eq!(strip_recursion("f"), "f");
    }

    #[test]
    fn coverage_counts_listed_names_found_and_skips_comments() {
        let symbols: HashSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        assert_eq!(coverage("# header\n\na\nc\n b \n", &symbols), (2, 3));
    }
}

#[cfg(test)]
mod generated {
    use super::*;
    use proptest::prelude::*;

    /// The objects of a generated trace: the binary, a library, and two whose paths only look
    /// alike (`…/notairlock`, `…/airlock.so`).
    const OBJECTS: [&str; 4] = ["/t/release/airlock", "/lib/libc.so.6", "/t/notairlock", "/t/airlock.so"];

    /// Function `i` (at recursion level `level`), a symbol of object `i % 4`.
    fn name(i: usize, level: u8) -> String {
        let base = format!("_ZN1f{i}17h{i:016x}E");
        if level == 0 { base } else { format!("{base}'{level}") }
    }

    /// A trace of `events` (a function with a cost, then the function it calls), written as
    /// callgrind writes it: every object and name defined at its first use, `(id)` after.
    fn trace(events: &[(usize, u8, usize)]) -> String {
        let (mut obs, mut fns) = (HashMap::new(), HashMap::new());
        let id = |table: &mut HashMap<String, usize>, key: String| -> String {
            let n = table.len() + 1;
            match table.get(&key) {
                Some(i) => format!("({i})"),
                None => {
                    table.insert(key.clone(), n);
                    format!("({n}) {key}")
                }
            }
        };
        let mut t = String::from("version: 1\nevents: Ir\n");
        for &(f, level, callee) in events {
            t += &format!("ob={}\nfn={}\n1 3\n", id(&mut obs, OBJECTS[f % 4].into()), id(&mut fns, name(f, level)));
            t += &format!("cob={}\ncfn={}\ncalls=1 0\n1 7\n", id(&mut obs, OBJECTS[callee % 4].into()), id(&mut fns, name(callee, 0)));
        }
        t
    }

    proptest! {
        /// Whatever the trace, the list is the binary's functions that had a cost, each once
        /// without its recursion level, in the order they first had one; nothing of the other
        /// objects, and nothing only ever called.
        #[test]
        fn the_list_is_the_binarys_functions_with_a_cost_once_in_first_order(
            events in proptest::collection::vec((0usize..40, 0u8..4, 0usize..40), 0..120)
        ) {
            let mut want: Vec<String> = Vec::new();
            for &(f, _, _) in &events {
                let n = name(f, 0);
                if f % 4 == 0 && !want.contains(&n) {
                    want.push(n);
                }
            }
            prop_assert_eq!(functions_of(&trace(&events), "/airlock"), want);
        }
    }
}

#[cfg(test)]
mod committed {
    use super::*;

    /// The file `build.rs` hands to the linker: the header, then distinct symbol names, one a
    /// line, none of them blank or with a space (lld takes a line as one name).
    #[test]
    fn the_committed_code_order_is_one_distinct_symbol_a_line() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../link/code-order.txt")).unwrap();
        assert!(text.starts_with(HEADER), "the file starts with the header code-order writes");
        let names: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(names.len() > 1000, "{} names: the start alone runs thousands of functions", names.len());
        assert!(names.iter().all(|n| !n.is_empty() && !n.contains(char::is_whitespace)));
        let distinct: HashSet<&&str> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "a name twice");
        assert!(names.contains(&"main"));
    }
}
