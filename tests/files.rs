//! `files::write_atomically`: whatever stands in the directory, a write neither follows a
//! planted link, nor blocks on a FIFO, nor leaves a temp file behind; `remove_stale_temps`
//! removes only its own temp files.

use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nicplug::files::{remove_stale_temps, write_atomically};

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Names a predictable writer could use for its temp file (the ones nicplug used to).
fn guessable_temps(name: &str) -> Vec<String> {
    vec![
        format!(".{name}.{}.tmp", std::process::id()),
        format!(".{name}.tmp"),
        format!("{name}.tmp"),
    ]
}

#[test]
fn planted_links_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cdi");
    std::fs::create_dir(&dir).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "root-owned contents").unwrap();
    let name = "nicplug-nvidia.com_x.json";
    for guess in guessable_temps(name) {
        symlink(&victim, dir.join(guess)).unwrap();
    }
    write_atomically(&dir, name, b"{\"spec\": 1}").unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root-owned contents"
    );
    assert_eq!(std::fs::read(dir.join(name)).unwrap(), b"{\"spec\": 1}");

    // A link at the final name is replaced, not written through.
    let name2 = "nicplug-nvidia.com_y.json";
    symlink(&victim, dir.join(name2)).unwrap();
    write_atomically(&dir, name2, b"{}").unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root-owned contents"
    );
    assert!(
        std::fs::symlink_metadata(dir.join(name2))
            .unwrap()
            .is_file()
    );
}

#[test]
fn planted_fifos_never_block_a_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let name = "0000:3b:00.2-device.json";
    for guess in guessable_temps(name) {
        mkfifo(&dir.join(guess));
    }
    let (tx, rx) = mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || tx.send(write_atomically(&d, name, b"{}")));
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("write_atomically blocked on a FIFO");
    result.unwrap();
    assert_eq!(std::fs::read(dir.join(name)).unwrap(), b"{}");
    // Only the file and the planted FIFOs: no temp file left.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = guessable_temps(name);
    expected.push(name.to_string());
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn only_own_temp_files_are_removed_as_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::fs::write(dir.join(".nicplug.abc.tmp"), "half").unwrap();
    symlink(&victim, dir.join(".nicplug.link.tmp")).unwrap();
    mkfifo(&dir.join(".nicplug.fifo.tmp"));
    for other in ["nicplug-a_b.json", ".other.tmp", "x.tmp", ".nicplug.json"] {
        std::fs::write(dir.join(other), "not a temp").unwrap();
    }
    let gone = remove_stale_temps(&dir).unwrap();
    assert_eq!(
        gone,
        [".nicplug.abc.tmp", ".nicplug.fifo.tmp", ".nicplug.link.tmp"]
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 4);
    assert!(
        !std::fs::read_dir(&dir)
            .unwrap()
            .any(|e| e.unwrap().file_type().unwrap().is_fifo())
    );
    assert_eq!(
        remove_stale_temps(&tmp.path().join("missing")).unwrap(),
        Vec::<String>::new()
    );
}
