//! The one way kiln writes a file that may hold secrets: 0600 from its first
//! byte, parent directories 0700, written whole (temp file, fsync, rename).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists; pass --force to overwrite it", path.display())]
    Exists { path: PathBuf },
}

/// Write a file that holds secrets: created 0600, never world-readable for a moment.
/// fsync the directory holding `path`, so a rename into it survives a crash.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

pub fn write_private(path: &Path, data: &[u8], force: bool) -> Result<(), FileError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() && !force {
        return Err(FileError::Exists {
            path: path.to_path_buf(),
        });
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let tmp = path.with_extension("tmp-kiln");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)?;
    Ok(())
}

/// Open `path` for appending, created 0600 if absent.
pub fn open_private_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
