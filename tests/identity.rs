//! Resource identity through `nicplug config check`: every pair of resources that would share a
//! socket, CDI spec, environment variable or device-info file, and every name kubelet would
//! refuse, is refused naming both resources; distinct names of any valid length pass.

use std::process::Command;

/// `config check` of a config listing `resources` (JSON objects); (exit code, stdout + stderr).
fn check(resources: &[&str]) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.json");
    let list = resources
        .iter()
        .map(|r| format!(r#"{{{r}, "selectors": {{"vendors": ["15b3"]}}}}"#))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(&file, format!(r#"{{"resourceList": [{list}]}}"#)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .args(["--resource-prefix", "intel.com", "config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

fn named(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        format!(r#""resourceName": "{name}""#)
    } else {
        format!(r#""resourcePrefix": "{prefix}", "resourceName": "{name}""#)
    }
}

/// Refused, naming both full names and what they would share.
fn clash(a: (&str, &str), b: (&str, &str), shared: &str) {
    let (code, text) = check(&[&named(a.0, a.1), &named(b.0, b.1)]);
    assert_eq!(code, 2, "{a:?} {b:?} accepted:\n{text}");
    let full = |(p, n): (&str, &str)| format!("{}/{n}", if p.is_empty() { "intel.com" } else { p });
    for name in [full(a), full(b)] {
        assert!(text.contains(&name), "{name} not named:\n{text}");
    }
    assert!(text.contains(shared), "{shared:?} not said:\n{text}");
    assert!(text.contains("fix:"), "{text}");
}

#[test]
fn the_same_full_name_twice_is_refused_even_through_the_default_prefix() {
    clash(("intel.com", "x"), ("", "x"), "resource name");
}

#[test]
fn names_that_flatten_alike_are_refused() {
    // `-` moved across the '/': one device-info file name, one set of variables.
    clash(("a-b", "c"), ("a", "b-c"), "device-info file");
    // Variable names upper-case and turn '.' into '_' (the SR-IOV plugin's rule): a '.' in the
    // prefix and a '_' in the name meet, and case vanishes.
    clash(("a.b", "c"), ("a", "b_c"), "environment variable");
    clash(("p.com", "cx6"), ("p.com", "CX6"), "environment variable");
}

#[test]
fn a_variable_that_another_resource_also_sets_is_refused() {
    // PCIDEVICE_P_COM_CX6_INFO is both cx6's JSON record and cx6_info's ID list.
    clash(
        ("p.com", "cx6"),
        ("p.com", "cx6_info"),
        "environment variable",
    );
    // NICPLUG_EAL_ARGS_P_COM_N_0000_3B_00_2: n_0000_3b_00_2's pool variable, and n's per-device
    // variable for 0000:3b:00.2.
    clash(("p.com", "n_0000_3b_00_2"), ("p.com", "n"), "0000_3B_00_2");
}

#[test]
fn prefixes_kubelet_refuses_are_refused() {
    let long = format!(
        "{}.{}.{}.{}.com",
        "a".repeat(60),
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(60)
    );
    assert!(long.len() > 244 && long.len() <= 253, "{}", long.len());
    for prefix in [
        "kubernetes.io",
        "node.kubernetes.io",
        "requests.example.com",
        &long,
    ] {
        let (code, text) = check(&[&named(prefix, "x")]);
        assert_eq!(code, 2, "{prefix} accepted:\n{text}");
        assert!(text.contains("kubelet"), "{text}");
        assert!(text.contains("resourceList[0].resourcePrefix"), "{text}");
    }
}

#[test]
fn distinct_names_of_any_valid_length_pass() {
    // Its sockets need the hashed form; its device-info file names fit NAME_MAX.
    let long = format!(
        "{}.{}.{}.com",
        "a".repeat(60),
        "b".repeat(60),
        "c".repeat(24)
    );
    let (code, text) = check(&[
        &named("p.com", "cx6"),
        &named("p.com", "cx6_vf"),
        &named("p.com", "cx6-sf"),
        &named("", "cx6"),
        &named(&long, &"n".repeat(63)),
        &named(&long, &"m".repeat(63)),
    ]);
    assert_eq!(code, 0, "{text}");

    // Past 229 bytes of prefix and name, no filesystem takes the device-info file's name.
    let longer = format!("{}.{long}", "x".repeat(16));
    let (code, text) = check(&[&named(&longer, &"n".repeat(63))]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("longer than 255 bytes"), "{text}");
}
