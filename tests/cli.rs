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
