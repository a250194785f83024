//! What the end-to-end tests of the `tessera` binary share: running it, and a `tessera serve`
//! child process on loopback.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

/// Runs `tessera` and returns its standard output; fails the test unless it succeeded.
pub fn ok(args: &[&str]) -> String {
    let output = tessera(args);
    assert!(
        output.status.success(),
        "tessera {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `tessera serve` child process, killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
    /// The HTTP side port (`/metrics`, `/health`), when `extra` gave one with `--http`.
    pub http: Option<String>,
    /// What it said on stderr until it listened.
    pub said: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera serve` over `data` on `listen` with `extra` flags (no HTTP port unless they give
/// `--http`); its stderr if it stopped before listening.
pub fn try_serve(
    data: &Path,
    secret: &Path,
    listen: &str,
    extra: &[&str],
) -> Result<Server, String> {
    let http = if extra.contains(&"--http") {
        &[][..]
    } else {
        &["--http", "off"][..]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--data", path(data), "--listen", listen])
        .args(http)
        .args(["--jwt-secret-file", path(secret)])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    // `tessera serving DATA on ADDRESS (HTTP ADDRESS|off)`, as text or inside a JSON line.
    let (address, http) = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            return Err(said.join("\n"));
        };
        said.push(line.clone());
        if line.contains("tessera serving") {
            if let Some(rest) = line.split(" on ").nth(1) {
                let address = rest.split_whitespace().next().unwrap().to_owned();
                let http = rest
                    .split("(HTTP ")
                    .nth(1)
                    .and_then(|h| h.split(')').next())
                    .filter(|h| *h != "off")
                    .map(str::to_owned);
                break (address, http);
            }
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Server {
        child,
        address,
        http,
        said,
    })
}

/// `tessera serve` as `try_serve`, retried for a while (a port or the locks of a killed server
/// may take a moment to free).
pub fn serve(data: &Path, secret: &Path, listen: &str, extra: &[&str]) -> Server {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_serve(data, secret, listen, extra) {
            Ok(server) => return server,
            Err(said) => assert!(
                Instant::now() < deadline,
                "tessera serve did not start on {listen}: {said}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process whose standard error lines are collected as they come; killed (SIGKILL)
/// when dropped.
pub struct Process {
    pub child: Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Spawns `command` (RUST_LOG removed, so its logs are at their configured level).
    pub fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Process { child, lines }
    }

    /// The first line that passes `test`, waiting up to 30 s; `what` names it on failure.
    pub fn wait_for_line(&self, what: &str, test: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| test(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what}; the process said:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it said on stderr so far.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(self) {
        drop(self);
    }
}
