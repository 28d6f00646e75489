//! The command line as an operator meets it: exit codes and messages.

use std::process::Command;

fn nicplug(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .args(args)
        .output()
        .expect("run nicplug")
}

#[test]
fn a_resource_prefix_that_could_escape_a_directory_is_refused() {
    let out = nicplug(&["--resource-prefix", "../etc", "discover"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lower-case DNS subdomain"));
}

#[test]
fn config_check_summarises_or_lists_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.json");
    std::fs::write(&good, nicplug::fixture::sample_config()).unwrap();
    let out = nicplug(&["config", "check", good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok  nvidia.com/cx6dx_vf  deviceType=netDevice  selectors=1  isRdma"));
    assert!(text.contains("3 resource(s), valid"));

    let bad = tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"resourceList":[{"resourceName":"a b","deviceType":"netdev","selectors":{"vendors":["0x15b3"]}}]}"#,
    )
    .unwrap();
    let out = nicplug(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "resourceList[0].resourceName",
        "resourceList[0].deviceType",
        "resourceList[0].selectors.vendors[0]",
    ] {
        assert!(err.contains(path), "{path} not in:\n{err}");
    }

    let syntax = tmp.path().join("syntax.json");
    std::fs::write(&syntax, "{\n  \"resourceList\": [\n    {,}\n  ]\n}\n").unwrap();
    let out = nicplug(&["config", "check", syntax.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3, column"));
}

// ---- The SR-IOV plugin's command line (nicplug::legacy) ----

use nicplug::legacy::{Grammar, LegacyError, Translated, log_filter, translate};
use std::ffi::OsString;

/// nicplug's grammar as far as translation needs it (the binary derives it from clap; the
/// binary tests below check that the two agree where it matters).
fn grammar_translate(args: &[&str]) -> Result<Translated, LegacyError> {
    let subcommands: Vec<String> = [
        "discover", "config", "allocate", "serve", "cdi", "doctor", "probe", "demo", "sample",
        "help",
    ]
    .map(String::from)
    .to_vec();
    let value_flags: Vec<String> = ["config", "config-file", "log", "host-root", "kubelet-dir"]
        .map(String::from)
        .to_vec();
    let argv = std::iter::once("nicplug")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    translate(
        argv,
        &Grammar {
            subcommands: &subcommands,
            value_flags: &value_flags,
        },
    )
}

fn args_of(t: &Translated) -> Vec<String> {
    t.args[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sriov_network_operator_arguments_become_serve_options() {
    let t = grammar_translate(&[
        "--log-level=10",
        "--resource-prefix=openshift.io",
        "--config-file=/etc/pcidp/worker-1",
        "--use-cdi",
    ])
    .unwrap();
    assert_eq!(
        args_of(&t),
        [
            "serve",
            "--resource-prefix=openshift.io",
            "--config=/etc/pcidp/worker-1",
            "--cdi"
        ]
    );
    assert_eq!(t.verbosity, Some(10));
    assert!(t.implied_serve);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn nvidia_network_operator_arguments_log_dir_is_a_note() {
    let t = grammar_translate(&["--log-dir=sriovdp", "--log-level=10"]).unwrap();
    assert_eq!(args_of(&t), ["serve"]);
    assert_eq!(t.verbosity, Some(10));
    assert_eq!(t.notes.len(), 1);
    assert!(t.notes[0].contains("/var/log/sriovdp") && t.notes[0].contains("stderr"));
    let t = grammar_translate(&["--log-dir=sriovdp", "--log-level=10", "--use-cdi"]).unwrap();
    assert_eq!(args_of(&t), ["serve", "--cdi"]);
}

#[test]
fn go_flag_spellings_one_or_two_dashes_value_inline_or_next() {
    for args in [
        &["-config-file", "/c", "-resource-prefix", "x.io", "-v", "3"][..],
        &[
            "--config-file",
            "/c",
            "--resource-prefix",
            "x.io",
            "--v",
            "3",
        ][..],
        &["-config-file=/c", "-resource-prefix=x.io", "-v=3"][..],
        &["--config-file=/c", "--resource-prefix=x.io", "--v=3"][..],
    ] {
        let t = grammar_translate(args).unwrap();
        assert_eq!(
            args_of(&t),
            ["serve", "--config=/c", "--resource-prefix=x.io"],
            "{args:?}"
        );
        assert_eq!(t.verbosity, Some(3), "{args:?}");
    }
    // A value may start with a dash when it follows as the next argument, as in Go.
    let t = grammar_translate(&["-v", "-1"]).unwrap();
    assert_eq!(t.verbosity, Some(0));
}

#[test]
fn go_booleans() {
    for (arg, cdi) in [
        ("-use-cdi", true),
        ("--use-cdi", true),
        ("-use-cdi=true", true),
        ("-use-cdi=T", true),
        ("-use-cdi=1", true),
        ("-use-cdi=false", false),
        ("--use-cdi=0", false),
    ] {
        let t = grammar_translate(&[arg]).unwrap();
        assert_eq!(args_of(&t).contains(&"--cdi".to_string()), cdi, "{arg}");
    }
    assert_eq!(
        grammar_translate(&["-use-cdi=maybe"]).unwrap_err(),
        LegacyError::BadValue {
            flag: "use-cdi".into(),
            value: "maybe".into(),
            why: "not a boolean (true or false)".into()
        }
    );
    // `-logtostderr false` is `-logtostderr` then a positional, as in Go: clap refuses the
    // stray `false` after serve.
    let t = grammar_translate(&["-logtostderr", "false"]).unwrap();
    assert_eq!(args_of(&t), ["serve", "false"]);
}

#[test]
fn glog_flags_accepted_with_a_note_each_where_not_honoured() {
    let t = grammar_translate(&[
        "-v",
        "4",
        "-logtostderr",
        "-alsologtostderr",
        "-log_dir",
        "/var/log/x",
        "-stderrthreshold=WARNING",
        "-vmodule=server=5,manager*=2",
        "-log_backtrace_at=server.go:42",
    ])
    .unwrap();
    assert_eq!(args_of(&t), ["serve"]);
    assert_eq!(t.verbosity, Some(4));
    let notes = t.notes.join("\n");
    for want in [
        "/var/log/x",
        "-stderrthreshold=WARNING",
        "-vmodule=server=5,manager*=2",
        "-log_backtrace_at=server.go:42",
    ] {
        assert!(notes.contains(want), "{want} not in {notes}");
    }
    assert_eq!(t.notes.len(), 4, "one line per flag:\n{notes}");
    // Bad values are errors, as glog's are.
    for (args, flag) in [
        (&["-v", "loud"][..], "v"),
        (&["-stderrthreshold=LOUD"][..], "stderrthreshold"),
        (&["-vmodule=server"][..], "vmodule"),
        (&["-log_backtrace_at=here"][..], "log_backtrace_at"),
        (&["--log-level=ten"][..], "log-level"),
    ] {
        match grammar_translate(args) {
            Err(LegacyError::BadValue { flag: f, .. }) => assert_eq!(f, flag),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    assert_eq!(
        grammar_translate(&["-v"]).unwrap_err(),
        LegacyError::NeedsValue("v".into())
    );
}

#[test]
fn nicplug_own_command_lines_are_untouched() {
    for args in [
        &["discover"][..],
        &["--host-root", "/h", "discover", "-v"][..],
        &["--config", "/c", "serve", "--cdi"][..],
        &["config", "check", "--config-file=/c"][..],
        &["help"][..],
    ] {
        let t = grammar_translate(args).unwrap();
        assert_eq!(args_of(&t), args, "{args:?}");
        assert_eq!(t.verbosity, None, "{args:?}");
        assert!(!t.implied_serve);
    }
    // No subcommand: serve, with nicplug's own flags as given.
    let t = grammar_translate(&["--host-root", "/h", "--kubelet-dir", "/k"]).unwrap();
    assert_eq!(
        args_of(&t),
        ["serve", "--host-root", "/h", "--kubelet-dir", "/k"]
    );
    assert_eq!(t.verbosity, None);
    assert_eq!(args_of(&grammar_translate(&[]).unwrap()), ["serve"]);
    // Help and version stay the top level's.
    assert_eq!(args_of(&grammar_translate(&["-help"]).unwrap()), ["--help"]);
    assert_eq!(
        args_of(&grammar_translate(&["--version"]).unwrap()),
        ["--version"]
    );
}

#[test]
fn glog_verbosity_maps_to_nicplug_levels() {
    assert_eq!(log_filter(0), "warn,nicplug=info");
    assert_eq!(log_filter(3), "warn,nicplug=info");
    assert_eq!(log_filter(4), "warn,nicplug=debug");
    assert_eq!(log_filter(9), "warn,nicplug=debug");
    assert_eq!(log_filter(10), "warn,nicplug=trace");
}

// ---- The binary: the same translation, and the edges operators touch ----

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn binary_runs_the_daemon_for_the_plugin_command_line() {
    // serve starts and reads the config named by -config-file: its absence is the error.
    for args in [
        &[
            "--log-level=10",
            "--resource-prefix=x.io",
            "--config-file=/nonexistent/node-1",
        ][..],
        &[
            "-config-file",
            "/nonexistent/node-1",
            "-v",
            "10",
            "-logtostderr",
        ][..],
        &[
            "--log-dir=sriovdp",
            "--log-level=10",
            "--config-file=/nonexistent/node-1",
        ][..],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut all = vec!["--kubelet-dir", tmp.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let out = nicplug(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("/nonexistent/node-1: No such file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // The log-dir note is said at start, once, on one line.
    let tmp = tempfile::tempdir().unwrap();
    let out = nicplug(&[
        "--kubelet-dir",
        tmp.path().to_str().unwrap(),
        "--log-dir=sriovdp",
        "--config-file=/nonexistent/x",
    ]);
    assert_eq!(
        stderr(&out).matches("/var/log/sriovdp").count(),
        1,
        "{}",
        stderr(&out)
    );
    // Unknown flags still fail, naming the flag.
    let out = nicplug(&["--log-level=10", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bogus"), "{}", stderr(&out));
    let out = nicplug(&["-v"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("flag needs an argument: -v"));
}

#[test]
fn a_bad_log_filter_is_an_error() {
    for bad in ["wran", "nicplug=loud", "=info", ""] {
        let out = nicplug(&["--log", bad, "discover"]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&out).contains("--log"), "{bad:?}: {}", stderr(&out));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .env("NICPLUG_LOG", "verbose")
        .arg("demo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for good in ["warn", "info,nicplug::serve=debug", "nicplug=trace", "OFF"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = nicplug(&[
            "--log",
            good,
            "sample",
            "write",
            tmp.path().to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{good:?}: {}", stderr(&out));
    }
}

#[test]
fn every_log_event_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    assert!(nicplug(&["sample", "write", dir]).status.success());
    // A warning whose message would span lines: a config rejected on reload is one; here the
    // sample's broken VF warning carries a file name and reason. Force a newline through a
    // path: a host root whose name contains one.
    let odd = tmp.path().join("two\nlines");
    assert!(
        nicplug(&["sample", "write", odd.to_str().unwrap()])
            .status
            .success()
    );
    let out = nicplug(&[
        "--log",
        "info",
        "--host-root",
        odd.to_str().unwrap(),
        "discover",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("two\\nlines"), "{err}");
    for line in err.lines() {
        assert!(
            line.contains(" WARN ") || line.contains(" INFO ") || line.contains(" ERROR "),
            "a line that is not an event: {line:?}"
        );
    }
}

#[test]
fn config_check_honours_config_and_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node-1");
    std::fs::write(&cfg, nicplug::fixture::sample_config()).unwrap();
    for flag in ["--config", "--config-file"] {
        let out = nicplug(&[flag, cfg.to_str().unwrap(), "config", "check"]);
        assert!(out.status.success(), "{flag}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("3 resource(s), valid"));
        let out = nicplug(&["config", "check", flag, cfg.to_str().unwrap()]);
        assert!(out.status.success(), "{flag} after: {}", stderr(&out));
    }
}

#[test]
fn sample_write_refuses_to_overwrite_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("h");
    let d = dir.to_str().unwrap();
    assert!(nicplug(&["sample", "write", d]).status.success());
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let again = nicplug(&["sample", "write", d]);
    assert_eq!(again.status.code(), Some(2));
    let forced = nicplug(&["sample", "write", "--force", d]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "mine"
    );
    assert!(dir.join("sys/bus/pci/devices").is_dir());
}

#[test]
fn a_relative_host_root_gives_absolute_host_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nicplug"))
            .current_dir(tmp.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["sample", "write", "h"]).status.success());
    let out = run(&[
        "--host-root",
        "h",
        "--config",
        "h/config.json",
        "allocate",
        "--resource",
        "cx6dx_vf",
        "0000:3b:00.2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    for d in r["devices"].as_array().unwrap() {
        let host = d["host_path"].as_str().unwrap();
        assert!(
            Path::new(host).is_absolute() && Path::new(host).starts_with(&root)
                || host.starts_with(tmp.path().to_str().unwrap()),
            "{host}"
        );
    }
    for m in r["mounts"].as_array().unwrap() {
        assert!(Path::new(m["host_path"].as_str().unwrap()).is_absolute());
    }
}

use std::path::Path;

#[test]
fn allocate_previews_health_and_cdi_like_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    assert!(nicplug(&["sample", "write", d]).status.success());
    let cfg = format!("{d}/config.json");
    let base = [
        "--host-root",
        d,
        "--config",
        &cfg,
        "allocate",
        "--resource",
        "cx6dx_vf",
    ];
    // CDI: names the device in the spec, keeps the envs, passes no devices or mounts.
    let mut args = base.to_vec();
    args.extend(["--cdi", "0000:3b:00.2"]);
    let out = nicplug(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["cdi_devices"][0]["name"],
        "nvidia.com/cx6dx_vf=0000:3b:00.2"
    );
    assert!(r["devices"].as_array().unwrap().is_empty());
    assert!(r["mounts"].as_array().unwrap().is_empty());
    assert_eq!(r["envs"]["PCIDEVICE_NVIDIA_COM_CX6DX_VF"], "0000:3b:00.2");
    // PF 0000:3b:00.0 loses its link (and its VF 0000:3b:00.3 its own): the VF is unhealthy
    // under any health policy, the daemon refuses it, so does the preview.
    let pf = tmp
        .path()
        .join("sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0");
    for (file, text) in [
        ("net/ens1f0/operstate", "down\n"),
        ("net/ens1f0/carrier", "0\n"),
        ("infiniband/mlx5_0/ports/1/state", "1: DOWN\n"),
        ("infiniband/mlx5_0/ports/1/phys_state", "3: Disabled\n"),
        ("../0000:3b:00.3/net/ens1f0v1/operstate", "down\n"),
        ("../0000:3b:00.3/net/ens1f0v1/carrier", "0\n"),
    ] {
        std::fs::write(pf.join(file), text).unwrap();
    }
    let mut args = base.to_vec();
    args.push("0000:3b:00.3");
    let out = nicplug(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unhealthy"), "{}", stderr(&out));
}

#[test]
fn doctor_survives_a_closed_pipe() {
    use std::process::Stdio;
    // `nicplug doctor | head -1`: the reader is gone before nicplug writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .args(["doctor", "--device", "0000:3b:00.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}",
        out.status
    );
}

#[test]
fn probe_fails_without_plugin_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("device-plugins")).unwrap();
    let out = nicplug(&["probe", "--kubelet-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no nicplug plugin sockets"));
}

#[test]
fn plugin_flags_without_logging_flags_keep_nicplug_log_defaults() {
    let t = grammar_translate(&["--config-file=/c", "-resource-prefix", "x.io"]).unwrap();
    assert_eq!(
        args_of(&t),
        ["serve", "--config=/c", "--resource-prefix=x.io"]
    );
    assert_eq!(t.verbosity, None);
    let t = grammar_translate(&["--log-dir=sriovdp"]).unwrap();
    assert_eq!(t.verbosity, Some(nicplug::legacy::DEFAULT_VERBOSITY));
}
