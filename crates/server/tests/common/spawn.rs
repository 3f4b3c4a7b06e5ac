//! Starting a helper process (a Node authorization server) that prints one line once ready.
#![allow(dead_code, reason = "not every test crate that includes common starts a helper")]

/// Starts the helper process `command` makes (its stdout piped) and returns it with the first
/// line it prints once ready. A start that prints nothing within a minute (Node has been seen to
/// hang on a lock before its first line, once in many starts) is killed and tried again, twice;
/// then the test fails saying so.
pub fn spawn_announcing(what: &str, command: impl Fn() -> std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    for _ in 0..3 {
        let mut child = command().stdout(std::process::Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) => return (child, line),
            Err(_) => {
                eprintln!("{what} printed nothing in 60 s; started again");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    panic!("{what} printed nothing in three starts of 60 s");
}
