//! The config parser fed random input (issue 7): arbitrary JSON values, values shaped like a
//! `resourceList` with known and unknown keys of every type, random text and bytes, YAML text.
//! Properties: no panic; every refusal says where and why (a non-empty JSON path, rule and fix,
//! or a line and column for syntax errors); an accepted config always builds pools and edits
//! over the sample node without a panic. Case counts are fixed so the run stays bounded (~1 s).

use nicplug::HostPaths;
use nicplug::config::{Config, ConfigError, Format, parse_config};
use nicplug::host::Host;
use nicplug::{edits, fixture, host, pools};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::sync::OnceLock;

const CASES: u32 = 256;

/// Strings a config really holds, and ones that break it.
const WORDS: &[&str] = &[
    "",
    "15b3",
    "0x15b3",
    "101e",
    "8086",
    "mlx5_core",
    "vfio-pci",
    "0000:3b:00.2",
    "0000:3B:00.2",
    "ens1f0",
    "ens1f0#0,2-7",
    "ens1f0#",
    "ens1f0#7-2",
    "ens1f0#99999999999",
    "0000:3b:00.0#1-3",
    "ether",
    "infiniband",
    "netDevice",
    "accelerator",
    "auxNetDevice",
    "virtio",
    "vhost",
    "sf",
    "uverbs",
    "rdma_cm",
    "umad",
    "issm",
    "nvidia.com",
    "a/b",
    "../../etc",
    "cx6dx_vf",
    "cx6dx-vf",
    "x y",
    "*",
    "\u{0}",
    "é",
    "true",
    "1015",
];

/// Keys of the format, in several spellings, and some that are not.
const KEYS: &[&str] = &[
    "resourceList",
    "resourceName",
    "ResourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "additionalInfo",
    "selectors",
    "SelectorObj",
    "nicplug",
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "acpiIndexes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "pKeys",
    "ddpProfiles",
    "isRdma",
    "IsRdma",
    "needVhostNet",
    "vdpaType",
    "auxTypes",
    "countersMount",
    "rdmaDevices",
    "ealArgs",
    "vendorz",
    "*",
    "0000:3b:00.2",
    "",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        word().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep, keys drawn mostly from the format's own.
fn any_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A value a field of the format plausibly holds: mostly lists of words, sometimes anything.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::vec(word().prop_map(Value::String), 0..4).prop_map(Value::Array),
        2 => word().prop_map(Value::String),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => any_value(),
    ]
}

fn object_of(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            prop_oneof![
                5 => prop::sample::select(keys).prop_map(str::to_owned),
                1 => key(),
            ],
            field_value(),
        ),
        0..6,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

const SELECTOR_KEYS: &[&str] = &[
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "acpiIndexes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "pKeys",
    "isRdma",
    "needVhostNet",
    "vdpaType",
    "auxTypes",
];
const NICPLUG_KEYS: &[&str] = &["countersMount", "rdmaDevices", "ealArgs"];

fn resource() -> impl Strategy<Value = Value> {
    let selectors = prop_oneof![
        2 => object_of(SELECTOR_KEYS),
        2 => prop::collection::vec(object_of(SELECTOR_KEYS), 0..3).prop_map(Value::Array),
        1 => any_value(),
    ];
    let name = prop_oneof![
        3 => prop::sample::select(&["r", "cx6dx_vf", "all", "sf"][..]).prop_map(Value::from),
        1 => field_value(),
    ];
    let device_type = prop_oneof![
        3 => prop::sample::select(&["netDevice", "accelerator", "auxNetDevice"][..])
            .prop_map(Value::from),
        1 => field_value(),
    ];
    (
        name,
        prop::option::of(device_type),
        prop::option::of(word().prop_map(Value::String)),
        prop::option::of(selectors),
        prop::option::of(object_of(NICPLUG_KEYS)),
        prop::option::of(any_value()),
        prop::collection::vec((key(), field_value()), 0..2),
    )
        .prop_map(|(name, dt, prefix, sel, nicplug, info, extra)| {
            let mut m = Map::new();
            m.insert("resourceName".into(), name);
            let optional = [
                ("deviceType", dt),
                ("resourcePrefix", prefix),
                ("selectors", sel),
                ("nicplug", nicplug),
                ("additionalInfo", info),
            ];
            for (k, v) in optional {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            m.extend(extra);
            Value::Object(m)
        })
}

fn config_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::vec(resource(), 0..4)
            .prop_map(|list| serde_json::json!({ "resourceList": list })),
        1 => any_value(),
    ]
}

/// The sample node, discovered once: accepted configs are turned into pools and edits on it.
fn sample() -> &'static (tempfile::TempDir, HostPaths, Host) {
    static SAMPLE: OnceLock<(tempfile::TempDir, HostPaths, Host)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let paths = fixture::materialize(&fixture::sample_node(), tmp.path()).unwrap();
        let host = host::discover(&paths).unwrap();
        (tmp, paths, host)
    })
}

/// The properties every parse result must have.
fn check(text: &str, format: Format) -> Result<(), TestCaseError> {
    match parse_config(text, format) {
        Ok(config) => {
            // Deterministic, and usable: pools and edits never panic on an accepted config.
            let again = parse_config(text, format).expect("accepted once, accepted twice");
            prop_assert_eq!(&again, &config);
            use_config(&config);
        }
        Err(ConfigError::Syntax {
            line,
            column,
            message,
        }) => {
            prop_assert!(!message.is_empty(), "syntax error without a message");
            if format == Format::Json {
                prop_assert!(line >= 1 && column >= 1, "JSON error at {line}:{column}");
            } else {
                prop_assert!(
                    (line == 0) == (column == 0),
                    "YAML error at {line}:{column}"
                );
            }
        }
        Err(ConfigError::Invalid { problems }) => {
            prop_assert!(!problems.is_empty(), "Invalid without problems");
            for p in &problems {
                prop_assert!(
                    !p.path.is_empty() && !p.rule.is_empty() && !p.fix.is_empty(),
                    "problem lacks path, rule or fix: {:?}",
                    p
                );
            }
        }
        Err(
            e @ (ConfigError::Read { .. }
            | ConfigError::NotRegular { .. }
            | ConfigError::TooLarge { .. }),
        ) => prop_assert!(false, "parse_config read a file: {e}"),
    }
    Ok(())
}

fn use_config(config: &Config) {
    let (_tmp, paths, host) = sample();
    let built = pools::build(host, config, "intel.com");
    for pool in &built.pools {
        let ids: Vec<String> = pool.devices.iter().map(|d| d.id.clone()).collect();
        if let Some(first) = ids.first() {
            let _ = edits::container_edits(pool, host, paths, std::slice::from_ref(first));
            let _ = edits::container_edits(pool, host, paths, &ids);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Config-shaped values (and any value) as JSON, and the same text read as YAML (JSON is
    /// YAML's flow style).
    #[test]
    fn config_shaped_values(value in config_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        check(&text, Format::Json)?;
        check(&text, Format::Yaml)?;
    }

    /// Valid text cut short, as a half-written file is read.
    #[test]
    fn truncated_configs(value in config_value(), cut in any::<prop::sample::Index>()) {
        let text = serde_json::to_string_pretty(&value).unwrap();
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        check(&text[..end], Format::Json)?;
        check(&text[..end], Format::Yaml)?;
    }

    /// Random bytes (lossily decoded, as a file read would be refused otherwise) and random
    /// printable text.
    #[test]
    fn random_text(bytes in prop::collection::vec(any::<u8>(), 0..256), text in "\\PC{0,120}") {
        let lossy = String::from_utf8_lossy(&bytes);
        for t in [lossy.as_ref(), text.as_str()] {
            check(t, Format::Json)?;
            check(t, Format::Yaml)?;
        }
    }

    /// Block-style YAML built from the format's keys and YAML's own troublemakers (anchors,
    /// aliases, tags, merge keys, multi-documents, tabs, odd indentation).
    #[test]
    fn yaml_text(lines in prop::collection::vec(yaml_line(), 0..14)) {
        let text = lines.join("\n");
        check(&text, Format::Yaml)?;
    }
}

fn yaml_line() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => key(),
        3 => word(),
        1 => prop::sample::select(
            &[
                "-", ":", "&a", "*a", "<<: *a", "!!str", "!!binary", "---", "...", "[", "]",
                "{", "}", "|", ">", "\t", "'", "\"", "#", "? ", "yes", "no", "~", "0x1F", "1e9",
            ][..],
        )
        .prop_map(str::to_owned),
    ];
    (0usize..8, prop::collection::vec(token, 1..5))
        .prop_map(|(indent, tokens)| format!("{}{}", " ".repeat(indent), tokens.join(" ")))
}

/// A known good config still parses after a round trip through the strategies' serialiser:
/// guards the properties above against vacuity (they must see accepted configs too).
#[test]
fn strategies_reach_accepted_configs() {
    let text = r#"{"resourceList": [{"resourceName": "r", "selectors": [{"vendors": ["15b3"]}]}]}"#;
    let value: Value = serde_json::from_str(text).unwrap();
    let config = parse_config(&serde_json::to_string_pretty(&value).unwrap(), Format::Json);
    assert!(config.is_ok(), "{config:?}");
    assert!(parse_config(text, Format::Yaml).is_ok());
}
