//! Reading and writing the tool's files. Secrets are written with mode 0600 from the
//! moment the file exists, never created readable and narrowed afterwards.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::ToolError;

/// Mode of files that hold a secret: the owner reads and writes, nobody else.
pub(crate) const SECRET: u32 = 0o600;

/// Mode of files that anyone on the host may read (certificates, public keys).
pub(crate) const PUBLIC: u32 = 0o644;

/// Reads a whole UTF-8 file.
pub(crate) fn read_text(path: &Path) -> Result<String, ToolError> {
    fs::read_to_string(path).map_err(|source| ToolError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` with `contents` and `mode`; refuses if anything is there already.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), ToolError> {
    let mut file = open_new(path, mode).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ToolError::Exists {
                path: path.to_owned(),
            }
        } else {
            ToolError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;

    if let Err(source) = file.write_all(contents).and_then(|()| file.sync_all()) {
        // A half-written key or certificate is worse than none: the next run would keep it.
        let _ = fs::remove_file(path);
        return Err(ToolError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Writes `path` whole, replacing what is there: the contents go to a temporary file
/// beside it that is then renamed over it, so a reader sees the old file or the new one.
pub(crate) fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<(), ToolError> {
    let temporary = temporary_beside(path);
    let _ = fs::remove_file(&temporary);

    write_new(&temporary, contents, mode).map_err(|error| match error {
        // Name the file the operator asked for, not the temporary one.
        ToolError::Write { source, .. } => ToolError::Write {
            path: path.to_owned(),
            source,
        },
        other => other,
    })?;
    fs::rename(&temporary, path).map_err(|source| {
        let _ = fs::remove_file(&temporary);
        ToolError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Creates a directory (and its parents) readable only by its owner, if it is missing.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), ToolError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| ToolError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn open_new(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_not_written_over_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        write_new(&path, b"first", SECRET).unwrap();

        let error = write_new(&path, b"second", SECRET).unwrap_err();

        assert!(matches!(error, ToolError::Exists { .. }), "{error}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_written_owner_only_and_replacing_keeps_that() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");

        write_new(&path, b"first", SECRET).unwrap();
        write_replacing(&path, b"second", SECRET).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
