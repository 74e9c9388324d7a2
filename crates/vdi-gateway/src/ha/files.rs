//! Writing a managed file so that nothing is ever lost: the previous bytes
//! (raw: a file that is not UTF-8 is still a file), mode and owner are read
//! first, a new file goes to a fresh temporary (`O_EXCL`, never an existing
//! file or link), is synced, takes the previous mode and owner, and replaces
//! the old one by rename; the directory is synced too. Rolling back writes the
//! previous bytes the same way.

use super::HaError;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A managed file as it was before a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub bytes: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HaError + '_ {
    move |source| HaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file's bytes, mode and owner; `None` only when nothing is there. A
/// directory, a link or anything but a plain file is refused, and so is a
/// file that cannot be read: it is never taken for "absent".
pub fn read(path: &Path) -> Result<Option<Original>, HaError> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
        Ok(m) => m,
    };
    if !meta.file_type().is_file() {
        return Err(HaError::NotAFile(path.to_path_buf()));
    }
    let bytes = fs::read(path).map_err(io(path))?;
    Ok(Some(Original {
        bytes,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// A new temporary file next to `path`, created exclusively.
fn create_temp(path: &Path, mode: u32) -> Result<(PathBuf, File), HaError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.vdi-{:016x}", rand::random::<u64>()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    Ok((tmp, file))
}

/// A temporary copy of `bytes` next to `path` for a checker to read;
/// removed by the caller.
pub fn temp_copy(path: &Path, bytes: &[u8]) -> Result<PathBuf, HaError> {
    let (tmp, mut file) = create_temp(path, 0o600)?;
    if let Err(e) = file.write_all(bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    Ok(tmp)
}

fn sync_dir(path: &Path) -> Result<(), HaError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Replaces `path` with `bytes` atomically, with the mode and owner of
/// `like` (the file it replaces; else 0644 and the gateway's user).
pub fn replace(path: &Path, bytes: &[u8], like: Option<&Original>) -> Result<(), HaError> {
    let mode = like.map_or(0o644, |o| o.mode);
    let (tmp, mut file) = create_temp(path, mode)?;
    let written = (|| {
        file.write_all(bytes)?;
        // The creation mode went through the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(o) = like {
            std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid))?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    sync_dir(path)
}

/// Keeps the replaced bytes as `NAME.prev` (the admin's copy to compare).
pub fn keep_previous(path: &Path, original: &Original) -> Result<(), HaError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    let prev = path.with_file_name(name);
    match read(&prev) {
        // Never replace something that is not a plain file of ours.
        Err(e) => Err(e),
        Ok(_) => replace(&prev, &original.bytes, Some(original)),
    }
}

/// Puts `path` back as it was: the original bytes, mode and owner, or no
/// file when there was none.
pub fn restore(path: &Path, original: Option<&Original>) -> Result<(), HaError> {
    match original {
        Some(o) => replace(path, &o.bytes, Some(o)),
        None => match fs::remove_file(path) {
            Ok(()) => sync_dir(path),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path)(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_mode_and_restore_gives_back_every_byte() {
        let dir = crate::testing::TempDir::new();
        let path = dir.0.join("conf/haproxy.cfg");
        assert_eq!(read(&path).unwrap(), None);
        // Not UTF-8: still a file with contents that must survive.
        let binary = vec![0xff, 0x00, 0xfe, b'\n', 0x80];
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &binary).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let original = read(&path).unwrap().unwrap();
        assert_eq!(original.bytes, binary);
        replace(&path, b"new text\n", Some(&original)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new text\n");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        restore(&path, Some(&original)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), binary);
        // No temporary left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["haproxy.cfg"], "{names:?}");
        restore(&path, None).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn links_and_directories_are_refused_not_followed() {
        let dir = crate::testing::TempDir::new();
        let target = dir.0.join("precious");
        fs::write(&target, b"keep me").unwrap();
        let link = dir.0.join("link.cfg");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(read(&link), Err(HaError::NotAFile(_))));
        assert!(matches!(read(&dir.0), Err(HaError::NotAFile(_))));
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
    }
}
