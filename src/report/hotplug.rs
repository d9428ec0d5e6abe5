//! What `status` and a dry run say of the devices present whose driver limopack pruned.

use serde_json::json;

use crate::read::hotplug::Unbound;

/// One line for each device and module, under a heading; nothing when there is none.
pub fn lines(unbound: &[Unbound]) -> Vec<String> {
    if unbound.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!("devices whose driver was pruned from the running kernel: {}", unbound.len())];
    for u in unbound {
        let package = u.package.as_deref().map(|p| format!(", pruned from {p}")).unwrap_or_default();
        lines.push(format!("  {} ({}): needs {}{package}; run `{}`", u.devpath, u.modalias, u.module, u.command));
    }
    lines
}

/// Add the devices to `status`'s text and JSON (`unbound_devices`); under `--root` (`None`)
/// the section is absent.
pub fn add(text: &mut Vec<String>, value: &mut serde_json::Value, unbound: Option<&[Unbound]>) {
    let Some(unbound) = unbound else { return };
    text.extend(lines(unbound));
    value["unbound_devices"] = json!(unbound);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_is_said_with_its_module_package_and_command() {
        let u = Unbound {
            devpath: "/devices/pci0000:00/0000:00:03.0".into(),
            modalias: "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00".into(),
            module: "e1000".into(),
            package: Some("linux-image-6.1.0-57-amd64".into()),
            command: crate::read::hotplug::restore_command("e1000"),
        };
        assert_eq!(
            lines(std::slice::from_ref(&u)),
            [
                "devices whose driver was pruned from the running kernel: 1",
                "  /devices/pci0000:00/0000:00:03.0 (pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00): needs e1000, pruned from linux-image-6.1.0-57-amd64; run `limopack-hook restore e1000`",
            ]
        );
        let (mut text, mut value) = (Vec::new(), json!({}));
        add(&mut text, &mut value, None);
        assert!(text.is_empty() && value.get("unbound_devices").is_none());
        add(&mut text, &mut value, Some(&[u]));
        assert_eq!(value["unbound_devices"][0]["module"], "e1000");
        assert!(lines(&[]).is_empty());
    }
}
