//! The device plugin's own event sources: kubelet's device-plugins directory (a kubelet restart
//! deletes our sockets) and the CDI spec directory. The host and the config are the
//! inventory's (see [`crate::inventory::watch`]).

use crate::inventory::watch::spawn_inotify;
use inotify::WatchMask;
use std::path::Path;
use tokio::sync::mpsc::Sender;

#[derive(Debug)]
pub enum Event {
    /// A file appeared in (`created`) or left the device-plugins directory.
    PluginDir { name: String, created: bool },
    /// Events of the device-plugins directory may have been lost: check every socket.
    PluginDirLost,
    /// A nicplug CDI spec was changed, replaced or removed (perhaps by us).
    CdiTouched,
}

pub fn plugin_dir(dir: &Path, tx: Sender<Event>) {
    spawn_inotify(
        vec![dir.to_path_buf()],
        WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::MOVED_TO,
        tx,
        "device-plugins dir",
        || Event::PluginDirLost,
        |ev| {
            let name = ev.name.as_ref()?.to_str()?.to_string();
            let created = ev
                .mask
                .intersects(inotify::EventMask::CREATE | inotify::EventMask::MOVED_TO);
            Some(Event::PluginDir { name, created })
        },
    );
}

/// The CDI spec directory: someone else deleting or editing a spec we wrote. Our own writes
/// show up too; checking them costs a `stat` each.
pub fn cdi_dir(dir: &Path, tx: Sender<Event>) {
    // The directory exists before it is watched (the specs are written into it soon anyway).
    let _ = std::fs::create_dir_all(dir);
    spawn_inotify(
        vec![dir.to_path_buf()],
        WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::ATTRIB,
        tx,
        "CDI spec directory",
        || Event::CdiTouched,
        |ev| {
            let name = ev.name.as_ref()?.to_str()?;
            (name.starts_with("nicplug-") && name.ends_with(".json")).then_some(Event::CdiTouched)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_watched_directory_removed_and_recreated_is_watched_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("device-plugins");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        plugin_dir(&dir, tx);
        // The watch is live.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(dir.join("a"), "").unwrap();
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await,
            Ok(Some(Event::PluginDir { ref name, created: true })) if name == "a"
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        // Until a file made in the new directory is seen, every event must be a loss report
        // or about the old one.
        let mut lost = 0;
        for _ in 0..200 {
            std::fs::write(dir.join("b"), "").unwrap();
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Event::PluginDir {
                    name,
                    created: true,
                })) if name == "b" => {
                    assert!(lost > 0, "the restart must say events were lost");
                    return;
                }
                Ok(Some(Event::PluginDirLost)) => lost += 1,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watcher stopped"),
                Err(_) => panic!("nothing from the re-created directory within 10 s"),
            }
            std::fs::remove_file(dir.join("b")).unwrap();
        }
        panic!("the re-created directory was never watched");
    }
}
