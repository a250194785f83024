//! The service manager's notification protocol (`sd_notify`): readiness, reloading, stopping
//! and watchdog pings as datagrams to the socket named by `NOTIFY_SOCKET`. Outside systemd
//! (no such variable) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half of `WATCHDOG_USEC` when the unit has `WatchdogSec=` for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = path.as_bytes();
            let address = match bytes.strip_prefix(b"@") {
                // An abstract socket (Linux): '@' stands for the leading NUL byte.
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, address))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { socket, watchdog }
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines); errors are ignored, as systemd's
    /// own `sd_notify` callers do: the service runs on without its manager's bookkeeping.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.socket {
            let _ = socket.send_to_addr(state.as_bytes(), address);
        }
    }

    /// How often to ping the watchdog, when the unit asks for pings.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `RELOADING=1` needs the monotonic time of the reload (systemd 253 and later check it).
    pub fn reloading(&self) {
        // SAFETY: clock_gettime writes into the struct we own.
        let mut now: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: None,
        };
        notifier.notify("READY=1\nSTATUS=serving");
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=serving");
        notifier.reloading();
        let n = listener.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
    }

    #[test]
    fn does_nothing_outside_systemd() {
        let notifier = Notifier {
            socket: None,
            watchdog: None,
        };
        notifier.notify("READY=1");
        assert_eq!(notifier.watchdog_interval(), None);
    }
}
