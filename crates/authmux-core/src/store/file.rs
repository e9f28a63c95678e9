//! A store in files, for every process of one machine: the CLI's default.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{StoreError, StoreErrorKind, StoredEntry, TokenStore};

/// A [`TokenStore`] in a directory: one file per key, for the processes of
/// one machine (the CLI's default, so that a script calling `authmux token`
/// in a loop makes one token request per token lifetime).
///
/// * The directory is created with mode 0700 and every file with mode 0600,
///   as gcloud's and the AWS CLI's token caches are. Without an encryption
///   key the tokens are stored in plaintext under that protection.
/// * A directory this user does not own, or that group or others may write
///   to, is refused (as ssh's `StrictModes` does); files are opened without
///   following symbolic links, and temporary files are created exclusively,
///   so nothing planted in the directory redirects a write.
/// * A value is written to a temporary file and renamed into place, so a
///   reader never sees half of one.
/// * Writes and compare-and-deletes of one key take an advisory lock on a
///   `.lock` file beside it.
/// * A lease is the holder and its expiry, written in the lease file, and
///   an advisory lock the holder keeps on that file while it fetches. The
///   lease is free when its time runs out or when nobody holds the lock:
///   the operating system releases the lock when the holder exits, however
///   it exits, so a process killed mid-fetch frees it at once. Waiting
///   processes block on that lock rather than poll.
#[derive(Clone, Debug)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Leases this process holds: the holder and the locked lease file (no
    /// file when it was taken from a holder whose time ran out but whose
    /// process still holds the lock).
    leases: Mutex<HashMap<String, (String, Option<File>)>>,
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

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Option<File>)>> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates the directory (mode 0700) unless it exists, and refuses one
    /// that another user owns or that group or others may write to.
    fn ensure_dir(&self) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.inner.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let metadata = fs::metadata(&self.inner.dir)?;
            let me = rustix::process::geteuid().as_raw();
            if metadata.uid() != me {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "refusing the directory: owned by uid {}, not this user (uid {me})",
                        metadata.uid()
                    ),
                ));
            }
            let mode = metadata.mode() & 0o777;
            if mode & 0o022 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "refusing the directory: group or others may write to it (mode {mode:04o}); chmod 700 it"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn error(&self, doing: &str, error: &io::Error) -> StoreError {
        let text = error.to_string();
        let why = text.split(" (os error ").next().unwrap_or(&text);
        let kind = if error.kind() == io::ErrorKind::PermissionDenied {
            StoreErrorKind::Config
        } else {
            StoreErrorKind::Unavailable
        };
        StoreError::new(
            kind,
            format!("cannot {doing} in {}: {why}", self.inner.dir.display()),
        )
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

    /// A live value and its time left.
    fn read_live(&self, path: &Path) -> io::Result<Option<(Vec<u8>, Duration)>> {
        let mut bytes = match read_no_follow(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let Some(expiry) = bytes.get(..EXPIRY_LEN) else {
            return Ok(None);
        };
        let mut expires_at_ms = [0u8; EXPIRY_LEN];
        expires_at_ms.copy_from_slice(expiry);
        let expires_at_ms = u64::from_be_bytes(expires_at_ms);
        let now = now_ms();
        if expires_at_ms <= now {
            return Ok(None);
        }
        bytes.drain(..EXPIRY_LEN);
        Ok(Some((bytes, Duration::from_millis(expires_at_ms - now))))
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

    /// Takes the lease `key` for `holder` if it is free: nobody holds its
    /// lock, or its time ran out.
    fn take_lease(&self, key: &str, holder: &str, ttl: Duration) -> io::Result<bool> {
        if self.leases().contains_key(key) {
            return Ok(false);
        }
        self.locked(key, |path| {
            let file = private_file(path)?;
            let lock = match fs4::FileExt::try_lock(&file) {
                Ok(()) => Some(file),
                Err(fs4::TryLockError::WouldBlock) => {
                    // A live process holds the lock: the lease is free only
                    // if its time ran out (its holder is stuck).
                    if self.read_live(path)?.is_some() {
                        return Ok(false);
                    }
                    None
                }
                Err(fs4::TryLockError::Error(error)) => return Err(error),
            };
            write_lease(path, lock.as_ref(), holder, ttl)?;
            self.leases()
                .insert(key.to_owned(), (holder.to_owned(), lock));
            Ok(true)
        })
    }

    /// Gives the lease back if `holder` holds it.
    fn give_back(&self, key: &str, holder: &str) -> io::Result<bool> {
        let held = {
            let mut leases = self.leases();
            match leases.get(key) {
                Some((held_by, _)) if held_by == holder => leases.remove(key),
                _ => None,
            }
        };
        let Some((_, lock)) = held else {
            return Ok(false);
        };
        self.locked(key, |path| {
            if lease_holder(path)?.as_deref() == Some(holder) {
                truncate_no_follow(path)?;
            }
            Ok(())
        })?;
        // Closing the file releases the lock, waking the waiters.
        drop(lock);
        Ok(true)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn expiry_after(ttl: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Options that never follow a symbolic link at the last component.
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    options
}

fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = no_follow(OpenOptions::new().read(true)).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn truncate_no_follow(path: &Path) -> io::Result<()> {
    match no_follow(OpenOptions::new().write(true)).open(path) {
        Ok(file) => file.set_len(0),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens (creating with mode 0600) a file for reading and writing, without
/// following a symbolic link.
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    no_follow(&mut options).open(path)
}

/// Writes the lease's expiry and holder into its file, through the locked
/// handle when there is one.
fn write_lease(path: &Path, locked: Option<&File>, holder: &str, ttl: Duration) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(EXPIRY_LEN + holder.len());
    bytes.extend_from_slice(&expiry_after(ttl).to_be_bytes());
    bytes.extend_from_slice(holder.as_bytes());
    let mut file = match locked {
        Some(file) => file.try_clone()?,
        None => private_file(path)?,
    };
    file.set_len(0)?;
    file.seek(io::SeekFrom::Start(0))?;
    file.write_all(&bytes)
}

/// The holder written in a lease file, expired or not.
fn lease_holder(path: &Path) -> io::Result<Option<String>> {
    match read_no_follow(path) {
        Ok(bytes) => Ok(bytes
            .get(EXPIRY_LEN..)
            .filter(|holder| !holder.is_empty())
            .map(|holder| String::from_utf8_lossy(holder).into_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// A lease attempt running on a blocking thread. If the caller stops
/// waiting for it (the store's timeout), a lease it takes all the same is
/// given back as soon as it is taken.
struct LeaseAttempt {
    job: Option<tokio::task::JoinHandle<io::Result<bool>>>,
    store: FileStore,
    key: String,
    holder: String,
}

impl Drop for LeaseAttempt {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let holder = std::mem::take(&mut self.holder);
        runtime.spawn(async move {
            if let Ok(Ok(true)) = job.await {
                let _ = tokio::task::spawn_blocking(move || store.give_back(&key, &holder)).await;
            }
        });
    }
}

#[async_trait]
impl TokenStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.inner.dir.display())
    }

    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        let path = self.path_of(key);
        let live = self
            .blocking("read a token", move |store| store.read_live(&path))
            .await?;
        Ok(live.map(|(value, ttl)| StoredEntry { value, ttl }))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = key.to_owned();
        let mut bytes = Vec::with_capacity(EXPIRY_LEN + value.len());
        bytes.extend_from_slice(&expiry_after(ttl).to_be_bytes());
        bytes.extend_from_slice(value);
        self.blocking("write a token", move |store| {
            store.locked(&key, |path| {
                let mut temporary = path.to_owned().into_os_string();
                temporary.push(format!(".{:016x}.tmp", rand::random::<u64>()));
                let temporary = PathBuf::from(temporary);
                let written = (|| {
                    let mut options = OpenOptions::new();
                    options.write(true).create_new(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    let mut file = no_follow(&mut options).open(&temporary)?;
                    file.write_all(&bytes)?;
                    file.sync_data()?;
                    // A rename replaces a link planted at `path`; it never
                    // writes through it.
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
                Some((value, _)) if value == expected => fs::remove_file(path).map(|()| true),
                _ => Ok(false),
            })
        })
        .await
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let job = {
            let store = self.clone();
            let key = key.to_owned();
            let holder = holder.to_owned();
            tokio::task::spawn_blocking(move || store.take_lease(&key, &holder, ttl))
        };
        let mut attempt = LeaseAttempt {
            job: Some(job),
            store: self.clone(),
            key: key.to_owned(),
            holder: holder.to_owned(),
        };
        let outcome = match attempt.job.as_mut() {
            Some(job) => job.await,
            None => return Ok(false),
        };
        attempt.job = None;
        match outcome {
            Ok(Ok(taken)) => Ok(taken),
            Ok(Err(error)) => Err(self.error("take a lease", &error)),
            Err(_) => Err(StoreError::unavailable(
                "the file store task failed to take a lease",
            )),
        }
    }

    async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self
            .leases()
            .get(key)
            .is_none_or(|(held_by, _)| held_by != holder)
        {
            return Ok(false);
        }
        let key = key.to_owned();
        let holder = holder.to_owned();
        self.blocking("renew a lease", move |store| {
            store.locked(&key, |path| {
                let live = store.read_live(path)?;
                let ours = live
                    .as_ref()
                    .is_some_and(|(written, _)| written.as_slice() == holder.as_bytes());
                if ours {
                    write_lease(path, None, &holder, ttl)?;
                }
                Ok(ours)
            })
        })
        .await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let holder = holder.to_owned();
        self.blocking("give a lease back", move |store| {
            store.give_back(&key, &holder)
        })
        .await
    }

    fn lease_freed(&self, key: &str) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let path = self.path_of(key);
        Some(Box::pin(async move {
            // Blocks on the holder's lock until it is given back or its
            // holder exits; a failure to open or lock ends the wait.
            let _ = tokio::task::spawn_blocking(move || -> io::Result<()> {
                let file = no_follow(OpenOptions::new().read(true)).open(&path)?;
                fs4::FileExt::lock_shared(&file)?;
                fs4::FileExt::unlock(&file)
            })
            .await;
        }))
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
        assert!(store.get("a:{x}:token").await.expect("get").is_none());
        store
            .put("a:{x}:token", b"v1", Duration::from_secs(60))
            .await
            .expect("put");
        let entry = store.get("a:{x}:token").await.expect("get").expect("live");
        assert_eq!(entry.value, b"v1".to_vec());
        assert!(entry.ttl <= Duration::from_secs(60) && entry.ttl > Duration::from_secs(50));
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
        assert!(store.get("a:{x}:token").await.expect("get").is_none());
        store.put("gone", b"v", Duration::ZERO).await.expect("put");
        assert!(store.get("gone").await.expect("get").is_none(), "expired");
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
        assert_eq!(files, 4, "the token, the lease and their lock files");
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

    #[tokio::test]
    async fn an_unreleased_lease_runs_out_after_its_ttl() {
        // A holder in a live process that never gives its lease back (its
        // flight leaked it) loses it when its time runs out.
        let dir = temp_dir("ttl");
        let leaky = FileStore::new(&dir);
        let other = FileStore::new(&dir);
        let ttl = Duration::from_millis(300);
        assert!(leaky.try_lease("l", "a", ttl).await.expect("lease"));
        assert!(!other.try_lease("l", "b", ttl).await.expect("held"));
        // Real time: the lease's expiry is the machine's clock, which every
        // process on it shares.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            other.try_lease("l", "b", ttl).await.expect("lease"),
            "an expired lease is free although its holder's process lives"
        );
        assert!(
            !leaky.renew_lease("l", "a", ttl).await.expect("renew"),
            "lost"
        );
        assert!(other.renew_lease("l", "b", ttl).await.expect("renew"));
        assert!(other.release_lease("l", "b").await.expect("release"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_renewed_lease_stays_with_its_holder() {
        let dir = temp_dir("renew");
        let holder = FileStore::new(&dir);
        let ttl = Duration::from_secs(2);
        assert!(holder.try_lease("l", "a", ttl).await.expect("lease"));
        let path = holder.path_of("l");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(holder.renew_lease("l", "a", ttl).await.expect("renew"));
        }
        // Without the renewals at most 1.55 s would be left.
        let (written, left) = holder.read_live(&path).expect("read").expect("live");
        assert_eq!(written, b"a".to_vec());
        assert!(left > Duration::from_millis(1_800), "{left:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_attempt_cut_short_by_a_timeout_leaves_no_lease_behind() {
        let dir = temp_dir("cancel");
        let store = FileStore::new(&dir);
        let ttl = Duration::from_secs(60);
        // Hold the key's lock so the attempt blocks, then give up on it.
        let (locked, is_locked) = tokio::sync::oneshot::channel();
        let blocker = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.locked("l", |_| {
                    let _ = locked.send(());
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
            })
        };
        is_locked.await.expect("the blocker holds the lock");
        let attempt = tokio::time::timeout(
            Duration::from_millis(20),
            store.try_lease("l", "cancelled", ttl),
        )
        .await;
        assert!(attempt.is_err(), "the attempt was still blocked");
        blocker.join().expect("thread").expect("locked");
        // The blocked attempt goes on and takes the lease, then gives it
        // back at once because nobody waits for it any more.
        let other = FileStore::new(&dir);
        let mut freed = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if other.try_lease("l", "next", ttl).await.expect("lease") {
                freed = true;
                break;
            }
        }
        assert!(freed, "a cancelled attempt kept the lease for its 60 s");
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_directory_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("open");
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let store = FileStore::new(&dir);
        let error = store
            .put("k", b"v", Duration::from_secs(60))
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("mode 0777"), "{error}");
        assert_eq!(error.kind(), StoreErrorKind::Config);
        assert!(store.ping().await.is_err());
        assert!(
            store
                .try_lease("l", "a", Duration::from_secs(1))
                .await
                .is_err()
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).expect("chmod");
        assert!(store.put("k", b"v", Duration::from_secs(60)).await.is_err());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        store
            .put("k", b"v", Duration::from_secs(60))
            .await
            .expect("a private directory is used");
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_link_planted_in_the_directory_is_never_written_through() {
        let dir = temp_dir("links");
        let outside = temp_dir("outside");
        fs::create_dir_all(&outside).expect("outside");
        let store = FileStore::new(&dir);
        store.ping().await.expect("creates the directory");
        let target = outside.join("victim");
        fs::write(&target, b"untouched").expect("victim");
        // Every file the store may open for the key: the value, its lock,
        // a lease and the lease's lock.
        for key in ["p:{h}:token", "p:{h}:lease"] {
            let path = store.path_of(key);
            let mut lock = path.clone().into_os_string();
            lock.push(".lock");
            std::os::unix::fs::symlink(&target, &path).expect("link");
            std::os::unix::fs::symlink(&target, &lock).expect("link");
        }
        let _ = store
            .put("p:{h}:token", b"planted?", Duration::from_secs(60))
            .await;
        let _ = store.get("p:{h}:token").await;
        let _ = store
            .try_lease("p:{h}:lease", "me", Duration::from_secs(5))
            .await;
        let _ = store.compare_and_delete("p:{h}:token", b"x").await;
        assert_eq!(fs::read(&target).expect("victim"), b"untouched");
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&outside);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_woken_when_the_lease_is_given_back() {
        let dir = temp_dir("wake");
        let holder = FileStore::new(&dir);
        let waiter = FileStore::new(&dir);
        let ttl = Duration::from_secs(60);
        assert!(holder.try_lease("l", "a", ttl).await.expect("lease"));
        let freed = waiter.lease_freed("l").expect("the file store can wait");
        let woken = tokio::spawn(freed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!woken.is_finished(), "woken while the lease is held");
        assert!(holder.release_lease("l", "a").await.expect("release"));
        tokio::time::timeout(Duration::from_secs(10), woken)
            .await
            .expect("woken once given back")
            .expect("task");
        assert!(waiter.try_lease("l", "b", ttl).await.expect("free"));
        let _ = fs::remove_dir_all(&dir);
    }
}
