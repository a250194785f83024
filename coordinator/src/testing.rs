//! A real PostgreSQL for tests (feature `testing`): `initdb` and `pg_ctl` on a temporary
//! directory and a free port, run as the `postgres` user when the test runs as root (the server
//! refuses to run as root); stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PostgresServer {
    /// `postgres://tessera@127.0.0.1:PORT/postgres`
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    stopped: bool,
}

/// Where Debian keeps the server's programs (`/usr/lib/postgresql/<version>/bin`), newest first.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PostgresServer {
    /// Starts a fresh server; panics with what to install when PostgreSQL is missing.
    pub fn start() -> PostgresServer {
        let bin = binaries().unwrap_or_else(|| {
            panic!("PostgreSQL's server programs are missing: apt-get install postgresql")
        });
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of the PostgreSQL directory failed");
        }
        let data = dir.path().join("data");
        let port = free_port();
        let mut server = PostgresServer {
            url: format!("postgres://tessera@127.0.0.1:{port}/postgres"),
            port,
            bin,
            dir,
            stopped: true,
        };
        server.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-A",
                "trust",
                "-U",
                "tessera",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            path(server.dir.path())
        );
        let log = server.dir.path().join("log");
        server.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "start",
            ],
        );
        server.stopped = false;
        server
    }

    /// One of the server's programs, run as `postgres` when this is root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        }
    }

    /// Runs one of the server's programs; panics with its output unless it succeeds.
    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the server (fast shutdown); calls after that fail with `Unavailable`.
    pub fn stop(&mut self) {
        if !self.stopped {
            let data = self.dir.path().join("data");
            self.run("pg_ctl", &["-D", path(&data), "-m", "fast", "-w", "stop"]);
            self.stopped = true;
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if !self.stopped && !std::thread::panicking() {
            self.stop();
        } else if !self.stopped {
            // Stopping with a panic in flight: best effort, never a second panic.
            let data = self.dir.path().join("data");
            let _ = self
                .command("pg_ctl")
                .args(["-D", path(&data), "-m", "immediate", "stop"])
                .output();
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
