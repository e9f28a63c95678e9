//! A store in files, for every process of one machine: the CLI's default.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{StoreError, TokenStore};

/// A [`TokenStore`] in a directory: one file per key, for the processes of
/// one machine (the CLI's default, so that a script calling `authmux token`
/// in a loop makes one token request per token lifetime).
///
/// * The directory is created with mode 0700 and every file with mode 0600,
///   as gcloud's and the AWS CLI's token caches are. Without an encryption
///   key the tokens are stored in plaintext under that protection.
/// * A value is written to a temporary file and renamed into place, so a
///   reader never sees half of one.
/// * Writes and compare-and-deletes of one key take an advisory lock on a
///   `.lock` file beside it.
/// * A lease is an advisory lock held on the lease file while the holder
///   fetches. The operating system releases it when the holder exits,
///   however it exits, so a process killed mid-fetch never blocks the
///   others; the lease time is not needed.
#[derive(Clone, Debug)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Leases this process holds: the locked file and its holder.
    leases: Mutex<HashMap<String, (String, File)>>,
}

/// How many bytes of a file the expiry takes: milliseconds since the Unix
/// epoch, big-endian.
const EXPIRY_LEN: usize = 8;

impl FileStore {
    /// A store in `dir`, created on first write. Nothing is read or written
    /// until then.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.into(),
                leases: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `$XDG_CACHE_HOME/authmux` if that variable holds an absolute path,
    /// else `~/.cache/authmux`; `None` without a home directory.
    pub fn default_dir() -> Option<PathBuf> {
        let from = |variable: &str| {
            std::env::var_os(variable)
                .map(PathBuf::from)
                .filter(|path| path.is_absolute())
        };
        from("XDG_CACHE_HOME")
            .or_else(|| from("HOME").map(|home| home.join(".cache")))
            .map(|cache| cache.join("authmux"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file holding `key`: every byte outside `[A-Za-z0-9_-]` is written
    /// `%XX`, so that distinct keys have distinct files.
    pub fn path_of(&self, key: &str) -> PathBuf {
        let mut name = String::with_capacity(key.len() + 8);
        for byte in key.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        self.inner.dir.join(name)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, File)>> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ensure_dir(&self) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.inner.dir)
    }

    fn error(&self, doing: &str, error: &io::Error) -> StoreError {
        let text = error.to_string();
        let why = text.split(" (os error ").next().unwrap_or(&text);
        StoreError::unavailable(format!(
            "cannot {doing} in {}: {why}",
            self.inner.dir.display()
        ))
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        doing: &'static str,
        work: impl FnOnce(&FileStore) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.error(doing, &error)),
            Err(_) => Err(StoreError::unavailable(format!(
                "the file store task failed to {doing}"
            ))),
        }
    }

    fn read_live(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let mut bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let Some(expiry) = bytes.get(..EXPIRY_LEN) else {
            return Ok(None);
        };
        let mut expires_at_ms = [0u8; EXPIRY_LEN];
        expires_at_ms.copy_from_slice(expiry);
        if u64::from_be_bytes(expires_at_ms) <= now_ms() {
            return Ok(None);
        }
        bytes.drain(..EXPIRY_LEN);
        Ok(Some(bytes))
    }

    /// Runs `work` holding the advisory lock of `key`'s `.lock` file.
    fn locked<T>(&self, key: &str, work: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
        self.ensure_dir()?;
        let path = self.path_of(key);
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = private_file(Path::new(&lock_path))?;
        fs4::FileExt::lock(&lock)?;
        let outcome = work(&path);
        let _ = fs4::FileExt::unlock(&lock);
        outcome
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Opens (creating with mode 0600) a file for reading and writing.
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[async_trait]
impl TokenStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.inner.dir.display())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(key);
        self.blocking("read a token", move |store| store.read_live(&path))
            .await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = key.to_owned();
        let expires_at_ms = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(0));
        let mut bytes = Vec::with_capacity(EXPIRY_LEN + value.len());
        bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
        bytes.extend_from_slice(value);
        self.blocking("write a token", move |store| {
            store.locked(&key, |path| {
                let mut temporary = path.to_owned().into_os_string();
                temporary.push(format!(".{:016x}.tmp", rand::random::<u64>()));
                let temporary = PathBuf::from(temporary);
                let written = (|| {
                    let mut file = private_file(&temporary)?;
                    file.set_len(0)?;
                    file.write_all(&bytes)?;
                    file.sync_data()?;
                    fs::rename(&temporary, path)
                })();
                if written.is_err() {
                    let _ = fs::remove_file(&temporary);
                }
                written
            })
        })
        .await
    }

    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let expected = expected.to_vec();
        self.blocking("delete a token", move |store| {
            store.locked(&key, |path| match store.read_live(path)? {
                Some(value) if value == expected => fs::remove_file(path).map(|()| true),
                _ => Ok(false),
            })
        })
        .await
    }

    async fn try_lease(&self, key: &str, holder: &str, _ttl: Duration) -> Result<bool, StoreError> {
        if self.leases().contains_key(key) {
            return Ok(false);
        }
        let key = key.to_owned();
        let holder = holder.to_owned();
        self.blocking("take a lease", move |store| {
            store.ensure_dir()?;
            let file = private_file(&store.path_of(&key))?;
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => return Ok(false),
                Err(fs4::TryLockError::Error(error)) => return Err(error),
            }
            let mut leases = store.leases();
            if leases.contains_key(&key) {
                return Ok(false);
            }
            leases.insert(key, (holder, file));
            Ok(true)
        })
        .await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<bool, StoreError> {
        let mut leases = self.leases();
        if leases
            .get(key)
            .is_some_and(|(held_by, _)| held_by == holder)
        {
            // Closing the file releases the lock.
            leases.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking("create the directory", |store| {
            store.ensure_dir()?;
            let probe = store
                .inner
                .dir
                .join(format!(".probe-{:016x}", rand::random::<u64>()));
            private_file(&probe)?;
            fs::remove_file(&probe)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "authmux-file-store-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn values_round_trip_expire_and_delete_by_comparison() {
        let dir = temp_dir("values");
        let store = FileStore::new(dir.join("nested"));
        assert_eq!(store.get("a:{x}:token").await.expect("get"), None);
        store
            .put("a:{x}:token", b"v1", Duration::from_secs(60))
            .await
            .expect("put");
        assert_eq!(
            store.get("a:{x}:token").await.expect("get"),
            Some(b"v1".to_vec())
        );
        assert!(
            !store
                .compare_and_delete("a:{x}:token", b"v2")
                .await
                .expect("cad")
        );
        assert!(
            store
                .compare_and_delete("a:{x}:token", b"v1")
                .await
                .expect("cad")
        );
        assert_eq!(store.get("a:{x}:token").await.expect("get"), None);
        store.put("gone", b"v", Duration::ZERO).await.expect("put");
        assert_eq!(store.get("gone").await.expect("get"), None, "expired");
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_directory_is_0700_and_every_file_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("modes");
        let store = FileStore::new(&dir);
        store
            .put("p:{h}:token", b"secret", Duration::from_secs(60))
            .await
            .expect("put");
        assert!(
            store
                .try_lease("p:{h}:lease", "me", Duration::from_secs(5))
                .await
                .expect("lease")
        );
        let mode = |path: &Path| fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let mut files = 0;
        for entry in fs::read_dir(&dir).expect("listing") {
            let path = entry.expect("entry").path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
        assert_eq!(files, 3, "the token, its lock file and the lease");
        assert_eq!(
            store
                .path_of("p:{h}:token")
                .file_name()
                .and_then(|name| name.to_str()),
            Some("p%3A%7Bh%7D%3Atoken")
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_lease_is_exclusive_until_released_or_its_holder_is_gone() {
        let dir = temp_dir("lease");
        let first = FileStore::new(&dir);
        let second = FileStore::new(&dir);
        let ttl = Duration::from_secs(5);
        assert!(first.try_lease("l", "a", ttl).await.expect("lease"));
        assert!(!first.try_lease("l", "b", ttl).await.expect("lease"));
        assert!(
            !second
                .try_lease("l", "b", ttl)
                .await
                .expect("held elsewhere")
        );
        assert!(!first.release_lease("l", "b").await.expect("release"));
        assert!(first.release_lease("l", "a").await.expect("release"));
        assert!(second.try_lease("l", "b", ttl).await.expect("free again"));
        // A holder that goes away (as a killed process does) frees it.
        drop(second);
        assert!(
            first
                .try_lease("l", "c", ttl)
                .await
                .expect("freed by its holder's end")
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
