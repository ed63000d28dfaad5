//! When io_uring is forbidden (here by a seccomp filter, as a container profile would), the
//! default `--io-backend auto` warns once, naming the cause, and serves on epoll; with
//! `--io-backend io-uring` the gateway exits at once with an error that names the cause,
//! instead of panicking or hanging.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{Gateway, hermetic};
use serde_json::json;

/// `io_uring_setup` on x86_64.
const SYS_IO_URING_SETUP: u32 = 425;

/// Installs a seccomp filter that fails `io_uring_setup` with EPERM and allows everything else.
fn forbid_io_uring() -> std::io::Result<()> {
    const LD_NR: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS, offset 0 = seccomp_data.nr
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let filter = [
        libc::sock_filter {
            code: LD_NR,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: JEQ,
            jt: 0,
            jf: 1,
            k: SYS_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: RET,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: RET,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: plain prctl calls in the forked child before exec; `prog` outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `ringcast` with io_uring forbidden and the configuration's variables removed.
fn forbidden() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    hermetic(&mut cmd).env_remove("RINGCAST_IO_BACKEND");
    // SAFETY: the closure only calls async-signal-safe prctl(2).
    unsafe {
        cmd.pre_exec(forbid_io_uring);
    }
    cmd
}

#[test]
fn auto_falls_back_to_epoll_with_one_warning_and_serves() {
    let gw = Gateway::start_command(&mut forbidden(), &["--shards", "2"]);
    let mut subscriber = gw.ws("/ws?subscribe=fallback");
    assert_eq!(
        subscriber.recv_json(),
        json!({"op": "subscribed", "channel": "fallback"})
    );
    for i in 0..20 {
        gw.publish("fallback", &json!({"seq": i}));
    }
    for i in 0..20 {
        assert_eq!(
            subscriber.recv_json(),
            json!({"channel": "fallback", "data": {"seq": i}})
        );
    }
    assert_eq!(gw.metric("ringcast_io_backend{backend=\"epoll\"}"), 1);
    let log = gw.log.lock().unwrap();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("io_uring is unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log:?}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("seccomp"), "{}", warnings[0]);
    assert!(warnings[0].contains("epoll"), "{}", warnings[0]);
    assert!(
        log.iter().any(|l| l.contains("io_backend=epoll")),
        "{log:?}"
    );
}

#[test]
fn io_uring_backend_exits_with_an_error_naming_io_uring() {
    let mut cmd = forbidden();
    cmd.args(["--listen", "127.0.0.1:0", "--io-backend", "io-uring"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cmd.output().expect("run ringcast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("io_uring is unavailable"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("seccomp"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}
