//! Readiness from outside: every nicplug plugin socket answers a cheap call, as kubelet would
//! make it, and the daemon says (in that answer's metadata) that every pool is registered with
//! the running kubelet.

use crate::api::Empty;
use crate::api::device_plugin_client::DevicePluginClient;
use std::path::Path;
use std::time::Duration;

/// Outcome per socket: (file name, error if it did not answer).
/// `readiness`: also fail a socket whose daemon reports a pool not registered with the running
/// kubelet.
pub async fn probe(
    plugin_dir: &Path,
    readiness: bool,
) -> std::io::Result<Vec<(String, Option<String>)>> {
    let mut names: Vec<String> = std::fs::read_dir(plugin_dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("nicplug-") && n.ends_with(".sock"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let call = async {
            let channel = crate::uds::channel(&plugin_dir.join(&name))
                .await
                .map_err(|e| e.to_string())?;
            let answer = DevicePluginClient::new(channel)
                .get_device_plugin_options(Empty {})
                .await
                .map_err(|e| e.to_string())?;
            match answer
                .metadata()
                .get(super::plugin::READY_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                Some(why) if readiness && why != "ok" => Err(format!("daemon not ready: {why}")),
                _ => Ok(()),
            }
        };
        let err = match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("no answer within 2 s".into()),
        };
        out.push((name, err));
    }
    Ok(out)
}
