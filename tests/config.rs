//! The config parser against realistic files, every validation rule, syntax errors and the VF
//! range grammar.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nicplug::config::range::{MAX_VF_INDEX, VfRangeError};
use nicplug::config::{
    Config, ConfigError, DeviceType, Format, HealthRule, NicplugOptions, PfSelector, Problem,
    RdmaCharDev, ResourceConfig, Selector, VdpaType, VfRange, parse_config, parse_config_file,
};
use proptest::prelude::*;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(name)
}

fn json(text: &str) -> Config {
    parse_config(text, Format::Json).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse_config(text, Format::Json) {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// The single problem of a config, which must be at `path`.
fn problem_at(text: &str, path: &str) -> Problem {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, path, "{found:#?}");
    found.into_iter().next().unwrap()
}

/// A config with one resource whose selector is `selector` (JSON text).
fn with_selector(device_type: &str, selector: &str) -> String {
    format!(
        r#"{{"resourceList": [{{"resourceName": "r", "deviceType": "{device_type}", "selectors": [{selector}]}}]}}"#
    )
}

fn pf(pf: &str, vfs: Option<&str>) -> PfSelector {
    PfSelector {
        pf: pf.to_owned(),
        vfs: vfs.map(|v| v.parse().unwrap()),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn resource(name: &str, selectors: Vec<Selector>) -> ResourceConfig {
    ResourceConfig {
        resource_name: name.to_owned(),
        resource_prefix: None,
        device_type: DeviceType::NetDevice,
        exclude_topology: false,
        additional_info: None,
        selectors,
        nicplug: NicplugOptions::default(),
    }
}

fn expected_full() -> Config {
    let info = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let cx6 = ResourceConfig {
        resource_prefix: Some("mellanox.com".into()),
        exclude_topology: true,
        additional_info: Some(BTreeMap::from([
            ("*".to_owned(), info(&[("netns", "shared")])),
            (
                "0000:3b:00.2".to_owned(),
                info(&[("port", "p0"), ("netns", "own")]),
            ),
        ])),
        nicplug: NicplugOptions {
            counters_mount: false,
            rdma_devices: Some(vec![RdmaCharDev::Uverbs, RdmaCharDev::RdmaCm]),
            eal_args: false,
            health: HealthRule::Strict,
        },
        ..resource(
            "cx6dx_dpdk",
            vec![
                Selector {
                    vendors: strings(&["15b3"]),
                    devices: strings(&["101e", "101d"]),
                    drivers: strings(&["mlx5_core"]),
                    pf_names: vec![pf("ens1f0", Some("0,2-7")), pf("ens1f1", None)],
                    root_devices: vec![pf("0000:3b:00.0", Some("8-15"))],
                    link_types: strings(&["ether"]),
                    is_rdma: true,
                    need_vhost_net: true,
                    ..Selector::default()
                },
                Selector {
                    pci_addresses: strings(&["0000:5e:00.2", "0000:5e:00.3"]),
                    acpi_indexes: strings(&["101"]),
                    ..Selector::default()
                },
            ],
        )
    };
    let ib = ResourceConfig {
        nicplug: NicplugOptions {
            rdma_devices: Some(vec![]),
            ..NicplugOptions::default()
        },
        ..resource(
            "cx7_ib",
            vec![Selector {
                vendors: strings(&["15b3"]),
                link_types: strings(&["infiniband"]),
                p_keys: strings(&["0x7fff"]),
                is_rdma: true,
                ..Selector::default()
            }],
        )
    };
    let vdpa = resource(
        "cx6_vdpa",
        vec![Selector {
            vendors: strings(&["15b3"]),
            vdpa_type: Some(VdpaType::Vhost),
            ..Selector::default()
        }],
    );
    let sf = ResourceConfig {
        device_type: DeviceType::AuxNetDevice,
        ..resource(
            "bf3_sf",
            vec![Selector {
                aux_types: strings(&["sf"]),
                pf_names: vec![pf("p0", None)],
                is_rdma: true,
                ..Selector::default()
            }],
        )
    };
    let fec = ResourceConfig {
        resource_prefix: Some("intel.com".into()),
        device_type: DeviceType::Accelerator,
        ..resource(
            "fec",
            vec![Selector {
                vendors: strings(&["8086"]),
                devices: strings(&["0d5c"]),
                drivers: strings(&["vfio-pci"]),
                pci_addresses: strings(&["0000:f7:00.1"]),
                ..Selector::default()
            }],
        )
    };
    Config {
        resources: vec![cx6, ib, vdpa, sf, fec],
    }
}

#[test]
fn full_json_config_parses_to_typed_values() {
    assert_eq!(
        parse_config_file(&data("full.json")).unwrap(),
        expected_full()
    );
}

#[test]
fn full_yaml_config_equals_the_json_one() {
    assert_eq!(
        parse_config_file(&data("full.yaml")).unwrap(),
        expected_full()
    );
    let text = std::fs::read_to_string(data("full.yaml")).unwrap();
    assert_eq!(parse_config(&text, Format::Yaml).unwrap(), expected_full());
}

#[test]
fn operator_generated_config_is_accepted_unchanged() {
    // What sriov-network-operator writes: Go field names without tags, an extra SelectorObj.
    let config = json(
        r#"{"resourceList":[{"resourceName":"mlxnics","selectors":{"vendors":["15b3"],"pfNames":["ens1f0#0-3"],"IsRdma":true,"NeedVhostNet":false},"SelectorObj":null}],"someFutureKey":1}"#,
    );
    let sel = &config.resources[0].selectors[0];
    assert!(sel.is_rdma);
    assert!(!sel.need_vhost_net);
    assert_eq!(sel.pf_names, vec![pf("ens1f0", Some("0-3"))]);
}

#[test]
fn legacy_single_object_selector_is_one_selector() {
    let config =
        json(r#"{"resourceList":[{"resourceName":"a","selectors":{"drivers":["mlx5_core"]}}]}"#);
    assert_eq!(
        config.resources,
        vec![resource(
            "a",
            vec![Selector {
                drivers: strings(&["mlx5_core"]),
                ..Selector::default()
            }]
        )]
    );
}

#[test]
fn selector_lists_keep_their_order() {
    let config = json(
        r#"{"resourceList":[{"resourceName":"a","selectors":[{"drivers":["c"]},{"drivers":["a"]},{"drivers":["b"]}]}]}"#,
    );
    let drivers: Vec<&str> = config.resources[0]
        .selectors
        .iter()
        .map(|s| s.drivers[0].as_str())
        .collect();
    assert_eq!(drivers, ["c", "a", "b"]);
}

#[test]
fn defaults_apply_when_fields_are_absent_empty_or_null() {
    let config = json(
        r#"{"resourceList":[{"resourceName":"a","deviceType":"","resourcePrefix":"","excludeTopology":null,"selectors":{"vendors":null,"vdpaType":""}}]}"#,
    );
    assert_eq!(
        config.resources,
        vec![resource("a", vec![Selector::default()])]
    );
    assert_eq!(json(r#"{"resourceList":[]}"#), Config::default());
}

#[test]
fn missing_or_empty_selectors_are_refused() {
    let p = problem_at(
        r#"{"resourceList":[{"resourceName":"a"}]}"#,
        "resourceList[0].selectors",
    );
    assert!(p.fix.contains(r#""selectors": {}"#), "{p}");
    problem_at(
        r#"{"resourceList":[{"resourceName":"a","selectors":[]}]}"#,
        "resourceList[0].selectors",
    );
    // An empty object is upstream's way to select everything.
    json(r#"{"resourceList":[{"resourceName":"a","selectors":{}}]}"#);
}

#[test]
fn top_level_shape_problems() {
    problem_at(r#"{"resources": []}"#, "resourceList");
    problem_at(r#"{"resourceList": {"resourceName": "a"}}"#, "resourceList");
    problem_at(r#"[{"resourceName": "a"}]"#, "(top level)");
    problem_at(r#"{"resourceList": [5]}"#, "resourceList[0]");
}

#[test]
fn resource_name_rules() {
    let config =
        |name: &str| format!(r#"{{"resourceList":[{{"resourceName":{name},"selectors":{{}}}}]}}"#);
    for bad in [r#""mlx 5""#, r#""""#, r#""-mlx""#, r#""mlx.5""#, "5"] {
        problem_at(&config(bad), "resourceList[0].resourceName");
    }
    let long = format!("\"{}\"", "a".repeat(64));
    problem_at(&config(&long), "resourceList[0].resourceName");
    let p = problem_at(
        &config(r#""mellanox.com/cx6""#),
        "resourceList[0].resourceName",
    );
    assert!(p.fix.contains(r#""resourcePrefix": "mellanox.com""#), "{p}");
    problem_at(
        r#"{"resourceList":[{"selectors":{}}]}"#,
        "resourceList[0].resourceName",
    );
    json(&config(r#""Mlx_5-a""#));
}

#[test]
fn duplicate_names_are_refused_per_prefix() {
    let p = problem_at(
        r#"{"resourceList":[
            {"resourceName":"a","selectors":{}},
            {"resourceName":"b","selectors":{}},
            {"resourceName":"a","selectors":{}}]}"#,
        "resourceList[2].resourceName",
    );
    assert!(p.rule.contains("resourceList[0]"), "{p}");
    problem_at(
        r#"{"resourceList":[
            {"resourceName":"a","resourcePrefix":"x.io","selectors":{}},
            {"resourceName":"a","resourcePrefix":"x.io","selectors":{}}]}"#,
        "resourceList[1].resourceName",
    );
    // Same name under different prefixes is two different resources.
    let config = json(
        r#"{"resourceList":[
            {"resourceName":"a","selectors":{}},
            {"resourceName":"a","resourcePrefix":"x.io","selectors":{}},
            {"resourceName":"a","resourcePrefix":"y.io","selectors":{}}]}"#,
    );
    assert_eq!(config.resources.len(), 3);
}

#[test]
fn resource_prefix_must_be_a_dns_subdomain() {
    let p = problem_at(
        r#"{"resourceList":[{"resourceName":"a","resourcePrefix":"Mellanox.com","selectors":{}}]}"#,
        "resourceList[0].resourcePrefix",
    );
    assert!(p.fix.contains(r#""mellanox.com""#), "{p}");
    problem_at(
        r#"{"resourceList":[{"resourceName":"a","resourcePrefix":"a..b","selectors":{}}]}"#,
        "resourceList[0].resourcePrefix",
    );
}

#[test]
fn bad_device_type_names_the_valid_ones() {
    let p = problem_at(
        r#"{"resourceList":[{"resourceName":"a","deviceType":"netdev","selectors":{}}]}"#,
        "resourceList[0].deviceType",
    );
    assert_eq!(
        p.to_string(),
        r#"resourceList[0].deviceType: "netdev" is not one of netDevice, accelerator, auxNetDevice; fix: use "netDevice" (case matters)"#
    );
    let p = problem_at(
        r#"{"resourceList":[{"resourceName":"a","deviceType":"AuxNetDevice","selectors":{}}]}"#,
        "resourceList[0].deviceType",
    );
    assert!(p.fix.contains(r#""auxNetDevice""#), "{p}");
}

#[test]
fn hex_ids_are_four_digits_without_0x() {
    let p = problem_at(
        &with_selector("netDevice", r#"{"vendors": ["15b3", "8086", "0x15b3"]}"#),
        "resourceList[0].selectors[0].vendors[2]",
    );
    assert!(p.fix.contains(r#"drop the 0x prefix: "15b3""#), "{p}");
    let p = problem_at(
        &with_selector("netDevice", r#"{"devices": ["d5c"]}"#),
        "resourceList[0].selectors[0].devices[0]",
    );
    assert!(p.fix.contains(r#""0d5c""#), "{p}");
    problem_at(
        &with_selector("netDevice", r#"{"devices": ["mlx5"]}"#),
        "resourceList[0].selectors[0].devices[0]",
    );
}

#[test]
fn pci_addresses_must_be_full_bdfs() {
    let p = problem_at(
        &with_selector(
            "netDevice",
            r#"{"pciAddresses": ["0000:3b:00.2", "3b:00.3"]}"#,
        ),
        "resourceList[0].selectors[0].pciAddresses[1]",
    );
    assert!(p.fix.contains(r#""0000:3b:00.3""#), "{p}");
    for bad in [
        "0000:3b:00.8",
        "0000:3b:20.0",
        "0000:3b:00",
        "0000:3bb:00.1",
        "",
    ] {
        problem_at(
            &with_selector("netDevice", &format!(r#"{{"pciAddresses": ["{bad}"]}}"#)),
            "resourceList[0].selectors[0].pciAddresses[0]",
        );
    }
    problem_at(
        &with_selector("netDevice", r#"{"rootDevices": ["3b:00.0#0-3"]}"#),
        "resourceList[0].selectors[0].rootDevices[0]",
    );
}

#[test]
fn bad_vf_ranges_are_reported_with_the_item() {
    for bad in [
        "ens1f0#",
        "ens1f0#0,,3",
        "ens1f0#7-3",
        "ens1f0#1 ,2",
        "ens1f0#a",
        "ens1f0#1#2",
    ] {
        let p = problem_at(
            &with_selector(
                "netDevice",
                &format!(r#"{{"pfNames": ["ens1f1", "{bad}"]}}"#),
            ),
            "resourceList[0].selectors[0].pfNames[1]",
        );
        assert!(p.rule.contains("VF indices"), "{p}");
    }
    problem_at(
        &with_selector("netDevice", r##"{"pfNames": ["#0-3"]}"##),
        "resourceList[0].selectors[0].pfNames[0]",
    );
}

#[test]
fn is_rdma_and_vdpa_type_exclude_each_other() {
    problem_at(
        &with_selector("netDevice", r#"{"isRdma": true, "vdpaType": "virtio"}"#),
        "resourceList[0].selectors[0].vdpaType",
    );
    problem_at(
        &with_selector("netDevice", r#"{"vdpaType": "vdpa"}"#),
        "resourceList[0].selectors[0].vdpaType",
    );
}

#[test]
fn ddp_profiles_are_refused_with_the_reason_and_a_fix() {
    // nicplug reads no DDP profile: accepting the selector would make a pool that silently
    // selects nothing.
    let p = problem_at(
        &with_selector(
            "netDevice",
            r#"{"vendors": ["8086"], "ddpProfiles": ["GTPv1-C/U IPv4/IPv6 payload"]}"#,
        ),
        "resourceList[0].selectors[0].ddpProfiles",
    );
    assert!(p.rule.contains("does not read Intel DDP profiles"), "{p}");
    assert!(p.fix.contains("pfNames"), "{p}");
    // An empty list narrows nothing and stays valid, as for every other selector.
    json(&with_selector("netDevice", r#"{"ddpProfiles": []}"#));
}

#[test]
fn aux_types_belong_to_aux_net_device() {
    let p = problem_at(
        &with_selector("netDevice", r#"{"auxTypes": ["sf"]}"#),
        "resourceList[0].selectors[0].auxTypes",
    );
    assert!(p.fix.contains("auxNetDevice"), "{p}");
    problem_at(
        &with_selector("auxNetDevice", r#"{"pfNames": ["p0"]}"#),
        "resourceList[0].selectors[0]",
    );
    problem_at(
        &with_selector("auxNetDevice", r#"{"auxTypes": ["vf"]}"#),
        "resourceList[0].selectors[0].auxTypes[0]",
    );
}

#[test]
fn fields_the_device_type_ignores_are_refused_when_set() {
    problem_at(
        &with_selector("accelerator", r#"{"pfNames": ["ens1f0"]}"#),
        "resourceList[0].selectors[0].pfNames",
    );
    problem_at(
        &with_selector(
            "auxNetDevice",
            r#"{"auxTypes": ["sf"], "pciAddresses": ["0000:3b:00.2"]}"#,
        ),
        "resourceList[0].selectors[0].pciAddresses",
    );
    // Unset values narrow nothing, so they are harmless.
    json(&with_selector(
        "accelerator",
        r#"{"isRdma": false, "pfNames": []}"#,
    ));
}

#[test]
fn wrong_json_types_say_what_to_write() {
    let p = problem_at(
        &with_selector("netDevice", r#"{"vendors": "15b3"}"#),
        "resourceList[0].selectors[0].vendors",
    );
    assert_eq!(p.fix, r#"wrap it in a list: ["15b3"]"#);
    let p = problem_at(
        &with_selector("netDevice", r#"{"isRdma": "true"}"#),
        "resourceList[0].selectors[0].isRdma",
    );
    assert_eq!(p.fix, "write true without quotes");
    problem_at(
        &with_selector("netDevice", r#"{"drivers": [1]}"#),
        "resourceList[0].selectors[0].drivers[0]",
    );
    problem_at(
        r#"{"resourceList":[{"resourceName":"a","excludeTopology":1,"selectors":{}}]}"#,
        "resourceList[0].excludeTopology",
    );
    problem_at(
        r#"{"resourceList":[{"resourceName":"a","selectors":"15b3"}]}"#,
        "resourceList[0].selectors",
    );
    problem_at(
        r#"{"resourceList":[{"resourceName":"a","selectors":{},"additionalInfo":{"*":{"k":1}}}]}"#,
        r#"resourceList[0].additionalInfo["*"].k"#,
    );
}

#[test]
fn unknown_selector_keys_are_refused_with_a_suggestion() {
    let p = problem_at(
        &with_selector("netDevice", r#"{"pfName": ["ens1f0"]}"#),
        "resourceList[0].selectors[0].pfName",
    );
    assert_eq!(p.fix, r#"rename it to "pfNames""#);
    let p = problem_at(
        &with_selector("netDevice", r#"{"resourcePrefix": "x.io"}"#),
        "resourceList[0].selectors[0].resourcePrefix",
    );
    assert!(p.fix.contains("resource"), "{p}");
    // Selector fields placed on the resource would be ignored upstream.
    problem_at(
        r#"{"resourceList":[{"resourceName":"a","isRdma":true,"selectors":{}}]}"#,
        "resourceList[0].isRdma",
    );
}

#[test]
fn keys_differing_only_in_case_may_not_collide() {
    problem_at(
        &with_selector("netDevice", r#"{"isRdma": true, "IsRdma": false}"#),
        "resourceList[0].selectors[0].isRdma",
    );
}

#[test]
fn nicplug_options_are_checked_strictly() {
    let config = |nicplug: &str| {
        format!(
            r#"{{"resourceList":[{{"resourceName":"a","selectors":{{}},"nicplug":{nicplug}}}]}}"#
        )
    };
    assert_eq!(
        json(&config("{}")).resources[0].nicplug,
        NicplugOptions::default()
    );
    let p = problem_at(
        &config(r#"{"countersmount": true}"#),
        "resourceList[0].nicplug.countersmount",
    );
    assert!(p.fix.contains(r#""countersMount""#), "{p}");
    let p = problem_at(
        &config(r#"{"rdmaDevices": ["uverbs", "rdmacm"]}"#),
        "resourceList[0].nicplug.rdmaDevices[1]",
    );
    assert!(p.fix.contains(r#""rdma_cm""#), "{p}");
    let found = problems(&config(
        r#"{"rdmaDevices": ["uverbs", "uverbs"], "ealArgs": "no"}"#,
    ));
    let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "resourceList[0].nicplug.ealArgs",
            "resourceList[0].nicplug.rdmaDevices[1]"
        ]
    );
    problem_at(&config("[]"), "resourceList[0].nicplug");

    // The health rule: two words, the typo named with its fix.
    assert_eq!(
        json(&config(r#"{"health": "strict"}"#)).resources[0]
            .nicplug
            .health,
        HealthRule::Strict
    );
    let p = problem_at(
        &config(r#"{"health": "stritc"}"#),
        "resourceList[0].nicplug.health",
    );
    assert_eq!(p.rule, r#""stritc" is not one of uplink, strict"#, "{p}");
    assert_eq!(p.fix, r#"use "strict""#, "{p}");
    let p = problem_at(
        &config(r#"{"health": "always"}"#),
        "resourceList[0].nicplug.health",
    );
    assert!(
        p.fix.contains(r#""uplink""#) && p.fix.contains(r#""strict""#),
        "{p}"
    );
    problem_at(
        &config(r#"{"health": true}"#),
        "resourceList[0].nicplug.health",
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = parse_config(
        r#"{"resourceList":[
            {"resourceName":"bad name","deviceType":"netdev","selectors":{"vendors":["0x15b3"],"isRdma":"yes"}},
            {"resourceName":"ok","selectors":[{"pciAddresses":["3b:00.2"]},{"typo":1}]}]}"#,
        Format::Json,
    )
    .unwrap_err();
    let ConfigError::Invalid { problems } = &err else {
        panic!("{err:?}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "resourceList[0].resourceName",
            "resourceList[0].deviceType",
            "resourceList[0].selectors.vendors[0]",
            "resourceList[0].selectors.isRdma",
            "resourceList[1].selectors[0].pciAddresses[0]",
            "resourceList[1].selectors[1].typo",
        ]
    );
    let text = err.to_string();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("6 problems in the config:"));
    for (line, problem) in lines.zip(problems) {
        assert_eq!(
            line,
            format!("{}: {}; fix: {}", problem.path, problem.rule, problem.fix)
        );
    }
}

#[test]
fn invalid_json_reports_line_and_column() {
    let err = parse_config(
        "{\n  \"resourceList\": [\n    {\"resourceName\": \"a\",}\n  ]\n}",
        Format::Json,
    )
    .unwrap_err();
    let ConfigError::Syntax {
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}")
    };
    // The '}' after the trailing comma.
    assert_eq!((*line, *column), (3, 26));
    assert_eq!(message, "trailing comma");
    assert_eq!(err.to_string(), "line 3, column 26: trailing comma");
    let Err(ConfigError::Syntax { line, column, .. }) = parse_config("", Format::Json) else {
        panic!()
    };
    assert_eq!((line, column), (1, 1));
}

#[test]
fn invalid_yaml_reports_line_and_column() {
    let err = parse_config(
        "resourceList:\n  - resourceName: a\n     selectors: {}\n",
        Format::Yaml,
    )
    .unwrap_err();
    let ConfigError::Syntax {
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*line, *column), (3, 15), "{message}");
    assert!(
        !message.contains("line"),
        "position is not repeated: {message}"
    );
    // An unclosed flow mapping is reported where it opens.
    let Err(ConfigError::Syntax {
        line,
        column,
        message,
    }) = parse_config("resourceList: [\n  {resourceName: a\n", Format::Yaml)
    else {
        panic!()
    };
    assert_eq!((line, column), (2, 3), "{message}");
    assert!(message.contains("unclosed"), "{message}");
}

#[test]
fn yaml_values_that_become_numbers_are_explained() {
    let p = match parse_config(
        "resourceList:\n  - resourceName: a\n    selectors:\n      devices: [1015]\n",
        Format::Yaml,
    ) {
        Err(ConfigError::Invalid { mut problems }) => problems.remove(0),
        other => panic!("{other:?}"),
    };
    assert_eq!(p.path, "resourceList[0].selectors.devices[0]");
    assert!(p.fix.contains("quotes"), "{p}");
}

#[test]
fn files_are_read_by_extension_and_read_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("config.yml");
    std::fs::write(&yml, "resourceList: []\n").unwrap();
    assert_eq!(parse_config_file(&yml).unwrap(), Config::default());
    // Not JSON, so a .json name must not be parsed as YAML.
    let json_path = dir.path().join("config.json");
    std::fs::write(&json_path, "resourceList: []\n").unwrap();
    assert!(matches!(
        parse_config_file(&json_path),
        Err(ConfigError::Syntax { line: 1, .. })
    ));
    // An operator's per-node ConfigMap key has no extension: JSON when it looks like JSON
    // (with JSON's error messages), YAML otherwise.
    let node = dir.path().join("worker-1");
    std::fs::write(&node, r#"{"resourceList": []}"#).unwrap();
    assert_eq!(parse_config_file(&node).unwrap(), Config::default());
    std::fs::write(&node, "{\"resourceList\": [}").unwrap();
    assert!(matches!(
        parse_config_file(&node),
        Err(ConfigError::Syntax { line: 1, .. })
    ));
    std::fs::write(&node, "resourceList: []\n").unwrap();
    assert_eq!(parse_config_file(&node).unwrap(), Config::default());
    let missing = dir.path().join("missing.json");
    match parse_config_file(&missing) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
}

#[test]
fn vf_range_examples() {
    let r: VfRange = "0,2-7".parse().unwrap();
    let selected: Vec<u32> = (0..10).filter(|&i| r.contains(i)).collect();
    assert_eq!(selected, [0, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        "5,0-2,3,9-9".parse::<VfRange>().unwrap().to_string(),
        "0-3,5,9"
    );
    assert_eq!("007".parse::<VfRange>().unwrap().to_string(), "7");
    assert_eq!(
        format!("0-{MAX_VF_INDEX}")
            .parse::<VfRange>()
            .unwrap()
            .ranges(),
        [(0, MAX_VF_INDEX)]
    );
    assert_eq!("".parse::<VfRange>(), Err(VfRangeError::Empty));
    assert_eq!(
        "1,,2".parse::<VfRange>(),
        Err(VfRangeError::EmptyItem { position: 2 })
    );
    assert!(matches!(
        "0-4294967295".parse::<VfRange>(),
        Err(VfRangeError::TooLarge { position: 1, .. })
    ));
    assert!(matches!(
        "0-99999999999999999999".parse::<VfRange>(),
        Err(VfRangeError::TooLarge { .. })
    ));
    assert!(matches!(
        "3-1".parse::<VfRange>(),
        Err(VfRangeError::Reversed {
            start: 3,
            end: 1,
            ..
        })
    ));
    for bad in ["+1", "-1", "1-", "1-2-3", " 1", "1 ", "a"] {
        assert!(
            matches!(bad.parse::<VfRange>(), Err(VfRangeError::Malformed { .. })),
            "{bad}"
        );
    }
    assert_eq!(
        "4,x".parse::<VfRange>().unwrap_err().to_string(),
        r#"item 2 ("x") is not a decimal index N or range A-B (no spaces or signs)"#
    );
}

/// Items of a `#` expression and the text they are written as.
fn items() -> impl Strategy<Value = Vec<(u32, u32)>> {
    prop::collection::vec(
        (0u32..300, 0u32..20).prop_map(|(start, len)| (start, start + len)),
        1..12,
    )
}

fn render(items: &[(u32, u32)]) -> String {
    items
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

proptest! {
    #[test]
    fn vf_range_display_round_trips(items in items()) {
        let range: VfRange = render(&items).parse().unwrap();
        prop_assert_eq!(range.to_string().parse::<VfRange>().unwrap(), range);
    }

    #[test]
    fn vf_range_contains_matches_a_naive_set(items in items()) {
        let range: VfRange = render(&items).parse().unwrap();
        let naive: BTreeSet<u32> = items.iter().flat_map(|&(a, b)| a..=b).collect();
        for index in 0..340 {
            prop_assert_eq!(range.contains(index), naive.contains(&index), "index {}", index);
        }
        prop_assert!(!range.contains(u32::MAX));
    }

    #[test]
    fn vf_range_never_panics(text in "\\PC*", near in "[0-9,\\- ]{0,24}") {
        let _ = text.parse::<VfRange>();
        if let Ok(range) = near.parse::<VfRange>() {
            prop_assert_eq!(range.to_string().parse::<VfRange>().unwrap(), range);
        }
    }

    #[test]
    fn config_parser_never_panics(text in "\\PC{0,200}") {
        let _ = parse_config(&text, Format::Json);
        let _ = parse_config(&text, Format::Yaml);
    }
}
