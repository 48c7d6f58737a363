//! A network namespace of the task's own: the sandboxed child leaves fanout's network before
//! anything else, so its whole tree sees a loopback interface and nothing beyond it — no
//! host's loopback, no outside address, no DNS, no UDP, whatever the port.
//!
//! As root a plain `CLONE_NEWNET` is enough. Otherwise the child first enters a user namespace
//! (mapping only its own ids, as the overlay does) that owns the new network namespace, brings
//! the loopback up with the capabilities that namespace gave, and drops them all again: the
//! overlay, when there is one, then makes its own (nested) user namespace for its mounts.

use super::privs;

/// In the forked, single-threaded child, before the overlay and the uid switch: a new network
/// namespace (in a new user namespace when not root) with its loopback up. Without root, the
/// capabilities the user namespace gave are dropped before returning. `Err` says why not; the
/// caller then falls back to the Landlock port rule.
pub(crate) fn enter() -> Result<(), String> {
    if let Some(why) = refused_for_tests() {
        return Err(why);
    }
    let root = nix::unistd::geteuid().is_root();
    super::userns::unshare_own_ids(libc::CLONE_NEWNET, "network")?;
    loopback_up().map_err(|e| format!("cannot bring the loopback interface up: {e}"))?;
    if !root {
        privs::drop_all_caps()?;
    }
    Ok(())
}

/// Sets IFF_UP on `lo` of the current network namespace (needs CAP_NET_ADMIN there).
#[allow(unsafe_code)]
fn loopback_up() -> Result<(), std::io::Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket takes integers; the result is checked before being owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which outlives the
    // calls; the union member used is ifru_flags.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `FANOUT_TEST_NO_NETNS=1`: behave as if no network namespace could be made (a kernel
/// without unprivileged user namespaces), so tests see the Landlock fallback.
#[cfg(feature = "test-hooks")]
fn refused_for_tests() -> Option<String> {
    (std::env::var("FANOUT_TEST_NO_NETNS").as_deref() == Ok("1"))
        .then(|| "FANOUT_TEST_NO_NETNS=1".to_string())
}

#[cfg(not(feature = "test-hooks"))]
fn refused_for_tests() -> Option<String> {
    None
}

/// Starts the forwarder of the egress proxy in the current (new) network namespace: it listens
/// on 127.0.0.1:`link.port` — bound here, before the program can run — and relays every
/// connection to the proxy's Unix socket `link.socket`. A process of its own, forked from the
/// single-threaded child: it holds none of the child's descriptors or stdio (so fanout's pipes
/// end with the program), dies with its parent (`PDEATHSIG`), and the supervisor kills it with
/// the tree. It stays outside the Landlock domain, which the program cannot signal or trace.
#[allow(unsafe_code)]
pub(crate) fn start_forwarder(link: &super::policy::EgressLink) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", link.port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", link.port))?;
    // SAFETY: the caller is the single-threaded sandboxed child; the forked process only
    // calls async-signal-safe functions until it has its own state, then runs plain Rust.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot start the egress forwarder: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => Ok(()),
        Ok(nix::unistd::ForkResult::Child) => {
            forwarder_main(listener, &link.socket);
            // SAFETY: _exit takes no pointers and ends this forked process at once.
            unsafe { libc::_exit(0) }
        }
    }
}

/// The forwarder's process: quiet stdio, no other descriptors, one thread per connection.
#[allow(unsafe_code)]
fn forwarder_main(listener: std::net::TcpListener, socket: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // SAFETY: SIG_IGN involves no handler code; a peer that goes away must not kill us.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in [0, 1, 2] {
            // SAFETY: dup2 onto the standard descriptors, which nothing here uses as Rust handles.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
    close_others(listener.as_raw_fd());
    for conn in listener.incoming().flatten() {
        let socket = socket.to_path_buf();
        std::thread::spawn(move || relay(conn, &socket));
    }
}

/// Copies both ways between `tcp` and a fresh connection to the proxy's socket.
fn relay(tcp: std::net::TcpStream, socket: &std::path::Path) {
    let Ok(unix) = std::os::unix::net::UnixStream::connect(socket) else {
        return; // the client sees the connection close
    };
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let (mut from, mut to) = (tcp2, unix2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let (mut from, mut to) = (unix, tcp);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// Closes every descriptor above 2 but `keep`.
#[allow(unsafe_code)]
fn close_others(keep: i32) {
    for (first, last) in [
        (3u32, (keep as u32).saturating_sub(1)),
        (keep as u32 + 1, u32::MAX),
    ] {
        if first <= last {
            // SAFETY: close_range only closes descriptors; `keep` is not among them.
            unsafe {
                libc::syscall(libc::SYS_close_range, first, last, 0u32);
            }
        }
    }
}
