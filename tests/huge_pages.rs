//! The gateway turns transparent huge pages off for itself (a huge page is resident whole once
//! touched, which made the RSS per idle connection move in 2 MiB steps), unless
//! `MIMALLOC_ALLOW_THP=1` asks to keep them. Read back from `/proc/<pid>/status`.

mod common;

use std::process::Command;

use common::{Gateway, hermetic};

/// The `THP_enabled:` line of the gateway's `/proc/<pid>/status` (Linux 6.x has it).
fn thp_enabled(gw: &Gateway) -> String {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id()))
        .expect("the gateway's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
        .expect("a THP_enabled line in /proc/<pid>/status (Linux 5.0 or later)")
}

#[test]
fn the_gateway_runs_without_transparent_huge_pages() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    hermetic(&mut cmd).env_remove("MIMALLOC_ALLOW_THP");
    let gw = Gateway::start_command(&mut cmd, &[]);
    assert_eq!(thp_enabled(&gw), "0");
}

#[test]
fn mimalloc_allow_thp_keeps_them() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    hermetic(&mut cmd).env("MIMALLOC_ALLOW_THP", "1");
    let gw = Gateway::start_command(&mut cmd, &[]);
    assert_eq!(thp_enabled(&gw), "1");
    assert!(
        gw.wait_log(&["transparent huge pages kept"], 1)
            .contains("MIMALLOC_ALLOW_THP=1")
    );
}
