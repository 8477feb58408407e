//! The compiled-code cache directory: created by farmgate with mode 0700, and trusted only while
//! it and its files stay writable by their owner alone.

use std::path::Path;

/// Creates the directory when missing; false (with a warning) when it cannot be trusted.
pub fn usable(dir: &Path) -> bool {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        if let Err(e) = builder.create(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the plugin code cache; compiling every time");
            return false;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() && m.permissions().mode() & 0o077 == 0 => true,
            _ => {
                tracing::warn!(dir = %dir.display(), "plugin code cache is not a private directory (mode 0700); not using it");
                false
            }
        }
    }
    #[cfg(not(unix))]
    {
        dir.is_dir()
    }
}

/// Whether `file` exists and only its owner, who owns the directory too, can write it.
pub fn trusted_file(file: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(f), Some(Ok(d))) = (
            std::fs::metadata(file),
            file.parent().map(std::fs::metadata),
        ) else {
            return false;
        };
        f.is_file() && f.mode() & 0o022 == 0 && f.uid() == d.uid()
    }
    #[cfg(not(unix))]
    {
        file.is_file()
    }
}

/// Writes compiled code next to its final name, then renames it in.
pub fn store(file: &Path, code: &[u8]) {
    let tmp = file.with_extension("tmp");
    let written = std::fs::write(&tmp, code).and_then(|_| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        tracing::debug!(file = %file.display(), error = %e, "cannot cache compiled plugin code");
        let _ = std::fs::remove_file(&tmp);
    }
}
