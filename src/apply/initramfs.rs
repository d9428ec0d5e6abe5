//! Refreshing a kernel's initramfs after its module tree changed, so that the next boot
//! neither carries modules that were pruned nor misses ones that came back. Debian offers two
//! generators, initramfs-tools and dracut (which replaces it when installed); the one whose
//! program is in the root builds the image, with the call its own kernel hook makes.

use std::process::Command;

use crate::error::{Error, Result};
use crate::kver::Kver;
use crate::read::config::Initramfs;
use crate::root::Root;

/// A program that builds `/boot/initrd.img-KVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    /// initramfs-tools: `update-initramfs`, Debian's default.
    InitramfsTools,
    /// dracut, as Debian's dracut package calls it from `/etc/kernel/postinst.d/dracut`.
    Dracut,
}

impl Generator {
    /// Where the generator's program is; its presence is what "installed" means here (a
    /// removed, unpurged package leaves its hooks, not its program).
    fn program(self) -> &'static str {
        match self {
            Generator::InitramfsTools => "/usr/sbin/update-initramfs",
            Generator::Dracut => "/usr/bin/dracut",
        }
    }

    /// The generator installed in `root`, read inside it. initramfs-tools first: when both
    /// are there, its kernel hook (`initramfs-tools`) runs after dracut's and has the last word.
    fn detect(root: &Root) -> Result<Option<Generator>> {
        for generator in [Generator::InitramfsTools, Generator::Dracut] {
            if root.resolve(generator.program())?.is_file() {
                return Ok(Some(generator));
            }
        }
        Ok(None)
    }

    /// The arguments that build `/boot/initrd.img-VERSION` for `version`, refreshing it when
    /// it `exists`. dracut's are those of Debian's `/etc/kernel/postinst.d/dracut`.
    fn args(self, version: &Kver, exists: bool) -> Vec<String> {
        match self {
            Generator::InitramfsTools => {
                vec![if exists { "-u" } else { "-c" }.to_string(), "-k".to_string(), version.to_string()]
            }
            Generator::Dracut => vec!["-q".to_string(), "--force".to_string(), image(version), version.to_string()],
        }
    }

    /// The program's name, as the admin types it.
    fn name(self) -> &'static str {
        self.program().rsplit('/').next().unwrap_or_default()
    }

    /// The command line as an admin would type it.
    fn command_line(self, version: &Kver, exists: bool) -> String {
        std::iter::once(self.name().to_string()).chain(self.args(version, exists)).collect::<Vec<_>>().join(" ")
    }
}

/// What is said when no generator is installed: once a run, whatever the number of kernels.
const NO_GENERATOR: &str = "nothing refreshes the initramfs: neither initramfs-tools nor dracut is installed";

fn image(version: &Kver) -> String {
    format!("/boot/initrd.img-{version}")
}

/// Refresh the initramfs of `version` as `policy` says. Returns what was done or why not,
/// for the run's report; `None` when the policy asks for nothing. `said_none` is set once
/// the run has said that no generator is installed, so that it says so once.
pub fn refresh(root: &Root, policy: Initramfs, version: &Kver, said_none: &mut bool) -> Result<Option<String>> {
    if policy == Initramfs::Never {
        return Ok(None);
    }
    let image = image(version);
    let exists = root.resolve(&image)?.exists();
    if !exists && policy == Initramfs::Auto {
        return Ok(None);
    }
    let Some(generator) = Generator::detect(root)? else {
        if policy == Initramfs::Always {
            return Err(Error::command(
                &image,
                "nothing builds it (neither update-initramfs nor dracut is installed), and the config says `initramfs: always`; install initramfs-tools or dracut, or set `initramfs: auto`",
            ));
        }
        return Ok((!std::mem::replace(said_none, true)).then(|| NO_GENERATOR.to_string()));
    };
    let command = generator.command_line(version, exists);
    if !root.is_host() {
        // The generators work on the running system; an image gets its own run inside it.
        return Ok(Some(format!("{image} not refreshed under --root: run `{command}` in the image")));
    }
    let output = Command::new(generator.program())
        .args(generator.args(version, exists))
        .output()
        .map_err(|e| Error::command(generator.program(), crate::error::plain(&e)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::command(
            generator.program(),
            format!("`{command}` failed ({}): {}", output.status, crate::shown::escaped(stderr.trim())),
        ));
    }
    Ok(Some(format!("refreshed {image} with {}", generator.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(programs: &[&str]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        for program in programs {
            let path = dir.path().join(program.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "#!/bin/sh\n").unwrap();
        }
        let root = Root::new(dir.path()).unwrap();
        (dir, root)
    }

    fn kver() -> Kver {
        Kver::new("6.12.57+deb13-cloud-amd64").unwrap()
    }

    #[test]
    fn detects_the_generator_whose_program_is_in_the_root() {
        assert_eq!(Generator::detect(&root_with(&[]).1).unwrap(), None);
        assert_eq!(Generator::detect(&root_with(&["/usr/bin/dracut"]).1).unwrap(), Some(Generator::Dracut));
        let both = ["/usr/bin/dracut", "/usr/sbin/update-initramfs"];
        assert_eq!(Generator::detect(&root_with(&both).1).unwrap(), Some(Generator::InitramfsTools));
        // initramfs-tools-core's mkinitramfs, which stays when dracut replaces initramfs-tools,
        // refreshes nothing.
        assert_eq!(Generator::detect(&root_with(&["/usr/sbin/mkinitramfs"]).1).unwrap(), None);
    }

    #[test]
    fn commands_are_those_of_the_generators_own_hooks() {
        let v = kver();
        assert_eq!(Generator::InitramfsTools.command_line(&v, true), "update-initramfs -u -k 6.12.57+deb13-cloud-amd64");
        assert_eq!(Generator::InitramfsTools.command_line(&v, false), "update-initramfs -c -k 6.12.57+deb13-cloud-amd64");
        let dracut = "dracut -q --force /boot/initrd.img-6.12.57+deb13-cloud-amd64 6.12.57+deb13-cloud-amd64";
        assert_eq!(Generator::Dracut.command_line(&v, true), dracut);
        assert_eq!(Generator::Dracut.command_line(&v, false), dracut);
    }

    #[test]
    fn an_image_gets_the_command_of_its_own_generator() {
        let (dir, root) = root_with(&["/usr/bin/dracut"]);
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join("boot/initrd.img-6.12.57+deb13-cloud-amd64"), "").unwrap();
        let note = refresh(&root, Initramfs::Auto, &kver(), &mut false).unwrap().unwrap();
        assert!(note.contains("run `dracut -q --force /boot/initrd.img-6.12.57+deb13-cloud-amd64 6.12.57+deb13-cloud-amd64` in the image"), "{note}");
    }

    #[test]
    fn without_a_generator_auto_says_so_once_and_always_fails() {
        let (dir, root) = root_with(&[]);
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join("boot/initrd.img-6.12.57+deb13-cloud-amd64"), "").unwrap();
        let mut said = false;
        assert_eq!(refresh(&root, Initramfs::Auto, &kver(), &mut said).unwrap().as_deref(), Some(NO_GENERATOR));
        assert_eq!(refresh(&root, Initramfs::Auto, &kver(), &mut said).unwrap(), None);
        assert_eq!(refresh(&root, Initramfs::Never, &kver(), &mut false).unwrap(), None);
        let e = refresh(&root, Initramfs::Always, &kver(), &mut false).unwrap_err().to_string();
        assert!(e.contains("neither update-initramfs nor dracut is installed"), "{e}");
    }

    #[test]
    fn auto_leaves_a_kernel_without_an_initramfs_alone() {
        let (_dir, root) = root_with(&["/usr/bin/dracut"]);
        assert_eq!(refresh(&root, Initramfs::Auto, &kver(), &mut false).unwrap(), None);
        let note = refresh(&root, Initramfs::Always, &kver(), &mut false).unwrap().unwrap();
        assert!(note.contains("run `dracut -q --force"), "{note}");
    }
}
