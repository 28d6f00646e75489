//! Reading a config is bounded in memory and never blocks, whatever the file holds: an alias
//! bomb, a huge file, the densest file under the size cap, a FIFO in its place. Each case runs
//! the real binary (`config check`) with its private memory capped by `RLIMIT_DATA` (heap and
//! every private writable mapping): going past the cap is an allocation failure and an abort,
//! not a clean exit 2. (Peak RSS cannot be read reliably from here: Linux carries a process's
//! peak across `execve`, so a child would report this test process's own.)

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The DaemonSet's memory limit is 64 MiB; parsing must stay well below it.
const DATA_LIMIT: u64 = 24 << 20;

struct Run {
    status: ExitStatus,
    stderr: String,
}

/// `nicplug config check FILE` under [`DATA_LIMIT`], killed if it runs for more than 20 s (a
/// blocked read).
fn config_check(file: &Path) -> Run {
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nicplug"));
    cmd.args(["config", "check"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(stderr_file.reopen().unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: DATA_LIMIT,
                rlim_max: DATA_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("config check of {} did not finish: blocked", file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(stderr_file.path()).unwrap();
    assert!(
        status.signal().is_none(),
        "killed by signal {:?} (an allocation past {} MiB aborts): {}",
        status.signal(),
        DATA_LIMIT >> 20,
        &stderr[..stderr.len().min(300)]
    );
    Run { status, stderr }
}

/// `head item,item,...,item tail` with `count` items, written piece by piece.
fn write_list(path: &Path, head: &str, item: &str, count: usize, tail: &str) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(head.as_bytes()).unwrap();
    for i in 0..count {
        if i > 0 {
            out.write_all(b",").unwrap();
        }
        out.write_all(item.as_bytes()).unwrap();
    }
    out.write_all(tail.as_bytes()).unwrap();
    out.flush().unwrap();
}

/// A billion-laughs document in ~550 bytes: 9 levels of 9 aliases each.
fn alias_bomb() -> String {
    let leaf = format!("\"{}\"", "x".repeat(24));
    let mut lines = vec![format!("a: &a [{}]", vec![leaf; 9].join(","))];
    let levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in levels.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(",");
        lines.push(format!("{}: &{} [{refs}]", pair[1], pair[1]));
    }
    lines.push("resourceList: *i".into());
    lines.join("\n") + "\n"
}

#[test]
fn a_yaml_alias_bomb_is_refused_within_the_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = tmp.path().join("bomb.yaml");
    let text = alias_bomb();
    assert!(text.len() < 600, "{}", text.len());
    std::fs::write(&bomb, text).unwrap();
    let run = config_check(&bomb);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("too large or too complex"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_huge_config_is_refused_before_it_is_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.json");
    // Valid JSON, 16 MiB: a list of zeros that would become millions of values.
    write_list(&big, "{\"resourceList\": [], \"x\": [", "0", 8 << 20, "]}");
    let run = config_check(&big);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("larger than"), "{}", run.stderr);
}

#[test]
fn the_densest_config_under_the_size_cap_stays_within_the_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    // Just under the cap: as many values per byte as JSON allows, every one a problem.
    let cap = nicplug::config::MAX_CONFIG_BYTES;
    let file = tmp.path().join("dense.json");
    write_list(&file, "{\"resourceList\": [", "0", (cap - 64) / 2, "]}");
    let run = config_check(&file);
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}",
        &run.stderr[..run.stderr.len().min(500)]
    );

    let yaml = tmp.path().join("dense.yaml");
    write_list(&yaml, "resourceList: [", "[0]", (cap - 64) / 4, "]\n");
    let run = config_check(&yaml);
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}",
        &run.stderr[..run.stderr.len().min(500)]
    );
}

#[test]
fn a_fifo_in_place_of_the_config_never_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("config.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let run = config_check(&fifo);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
}
