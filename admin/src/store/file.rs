//! `FileStore`: the single-node store. The whole state (revision and every object, Secrets with
//! their keys) is one file, `state.json`, rewritten per commit by writing a temp file in the same
//! folder, fsyncing it, renaming it over, and fsyncing the folder. A crash therefore leaves either
//! the last acknowledged state or the one before it, never a torn file. Files are 0600, the folder
//! is created 0700. Blocking I/O runs on `spawn_blocking`. One process owns a data dir at a time:
//! an exclusive lock on `gateway.lock`, held until the process exits or hands the store over
//! (binary upgrade), after which its writes fail instead of overwriting the new owner's.

use super::{Change, Committed, Listing, Op, State, Store, StoreError};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use model::{Resource, ResourceKey};
use serde::de::IgnoredAny;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The state file's name in the data dir.
pub const STATE_FILE: &str = "state.json";
const TEMP_FILE: &str = "state.json.tmp";
/// The lock file's name in the data dir; it holds the owner's process id.
pub const LOCK_FILE: &str = "gateway.lock";

/// A store in one file of a data dir.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// What readers see: replaced whole after each durable commit.
    state: ArcSwap<State>,
    /// Serializes commits so that each one starts from the state the previous one left.
    writer: Mutex<()>,
    changes: broadcast::Sender<Change>,
    /// The locked `gateway.lock` (the lock goes with the file); `None` once handed over.
    lock: Mutex<Option<File>>,
}

impl FileStore {
    /// Opens (or creates) the store in `dir`, loading `state.json` and removing a temp file a
    /// crash may have left. A state file that does not parse is an error, never an empty start.
    /// A data dir another process holds is an error at once.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        Self::open_waiting(dir, Duration::ZERO)
    }

    /// [`FileStore::open`], waiting up to `wait` for another process to release the data dir
    /// (a binary upgrade: the old process hands it over once it has stopped taking writes).
    pub fn open_waiting(dir: &Path, wait: Duration) -> Result<FileStore, StoreError> {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(dir, "create the data dir", e))?;
        }
        // Locked before anything is read or removed: the temp file may be another owner's
        // write in progress.
        let lock = lock_dir(dir, wait)?;
        let temp = dir.join(TEMP_FILE);
        match fs::remove_file(&temp) {
            Ok(()) => tracing::info!(path = %temp.display(), "removed an unfinished state write"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&temp, "remove", e)),
        }
        let path = dir.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let meta = fs::metadata(&path).map_err(|e| io_err(&path, "stat", e))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .map_err(|e| io_err(&path, "chmod", e))?;
                }
                decode_state(&bytes)
                    .map_err(|m| StoreError::Corrupt(format!("{}: {m}", path.display())))?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(&path, "read", e)),
        };
        Ok(FileStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                state: ArcSwap::from_pointee(state),
                writer: Mutex::new(()),
                changes: broadcast::channel(256).0,
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Releases the data dir to the process that takes over (binary upgrade), after any commit in
    /// progress: reads keep answering from memory, every later write fails as unavailable.
    pub fn hand_over(&self) {
        let _writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut lock = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = lock.take() {
            let _ = f.unlock();
            tracing::info!(dir = %self.inner.dir.display(), "data dir handed over");
        }
    }
}

/// Takes the exclusive lock of `dir`, polling up to `wait` while another process holds it, and
/// writes this process's id into the lock file (for the message the next one prints).
fn lock_dir(dir: &Path, wait: Duration) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_err(&path, "open", e))?;
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    let by = if holder.is_empty() {
                        String::from("another process")
                    } else {
                        format!("process {holder}")
                    };
                    return Err(StoreError::Unavailable(format!(
                        "{} is in use by {by} (one gateway per data dir; to replace a running one without downtime start the new one with --upgrade)",
                        dir.display()
                    )));
                }
                if !said {
                    tracing::info!(path = %path.display(), "waiting for the data dir's current owner to hand it over");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path, "lock", e)),
        }
    }
    f.set_len(0)
        .and_then(|()| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| io_err(&path, "write", e))?;
    Ok(f)
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// Reads `state.json` one object at a time: a JSON tree of the whole file (several times the size
/// of the typed objects) never exists, so a restart peaks at little more than the state it loads.
/// The problems found are reported in the order a check of the whole tree would find them:
/// revision, then the shape of `objects`, then each object in turn.
fn decode_state(bytes: &[u8]) -> Result<State, String> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut doc = StateDoc::default();
    StateSeed(&mut doc)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())?;
    let revision = doc.revision.ok_or("no revision")?;
    let mut state = State {
        revision,
        ..State::default()
    };
    for (i, r) in doc.objects.into_iter().enumerate() {
        if super::resource_version(&r).is_none_or(|v| v > revision) {
            return Err(format!(
                "objects[{i}]: resourceVersion missing or after the revision"
            ));
        }
        state.objects.insert(r.key(), r);
    }
    // Only objects before the one that failed were decoded: they were checked first.
    match doc.failure {
        Some(m) => Err(m),
        None => Ok(state),
    }
}

/// What [`StateSeed`] collects: `revision` if it is a u64, every object up to the first problem
/// with `objects`, and that problem.
#[derive(Default)]
struct StateDoc {
    revision: Option<u64>,
    objects: Vec<Resource>,
    failure: Option<String>,
}

/// The top level of `state.json`: an object with `revision` and `objects` (other keys ignored).
/// Anything else has no revision.
struct StateSeed<'a>(&'a mut StateDoc);

impl<'de> serde::de::DeserializeSeed<'de> for StateSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StateSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the state object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "revision" => self.0.revision = map.next_value::<Value>()?.as_u64(),
                "objects" => map.next_value_seed(ObjectsSeed(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// `objects`: decoded one element at a time, each element's JSON freed as soon as it is typed.
/// A repeated `objects` key replaces the earlier one, as it does in a JSON tree.
struct ObjectsSeed<'a>(&'a mut StateDoc);

impl<'de> serde::de::DeserializeSeed<'de> for ObjectsSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl ObjectsSeed<'_> {
    fn not_an_array(self) {
        self.0.objects.clear();
        self.0.failure = Some("objects is not an array".into());
    }
}

impl<'de> serde::de::Visitor<'de> for ObjectsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.objects.clear();
        self.0.failure = None;
        let mut i = 0;
        while let Some(v) = seq.next_element::<Value>()? {
            if self.0.failure.is_none() {
                match model::resource_from_value(v, None) {
                    Ok(r) => self.0.objects.push(r),
                    Err(e) => self.0.failure = Some(format!("objects[{i}]: {e}")),
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.not_an_array();
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.not_an_array();
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_an_array();
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_an_array();
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_an_array();
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_an_array();
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_an_array();
        Ok(())
    }
}

/// `{"revision": …, "objects": […]}`, as `json!` would order it, serialized straight from the
/// typed objects.
#[derive(serde::Serialize)]
struct StateOut<'a> {
    revision: u64,
    #[serde(serialize_with = "ser_objects")]
    objects: &'a BTreeMap<ResourceKey, Resource>,
}

fn ser_objects<S: serde::Serializer>(
    m: &&BTreeMap<ResourceKey, Resource>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.values())
}

/// Writes the state, pretty-printed, through a buffer: no copy of the whole file in memory.
fn write_state(state: &State, f: &mut File, path: &Path) -> Result<(), StoreError> {
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
    let doc = StateOut {
        revision: state.revision,
        objects: &state.objects,
    };
    serde_json::to_writer_pretty(&mut w, &doc).map_err(|e| {
        if e.is_io() {
            io_err(path, "write", e.into())
        } else {
            StoreError::Io(format!("encode state: {e}"))
        }
    })?;
    w.flush().map_err(|e| io_err(path, "write", e))
}

impl Inner {
    fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.lock.lock().map_or(true, |l| l.is_none()) {
            return Err(StoreError::Unavailable(format!(
                "{} was handed over to a new gateway process: write to it",
                self.dir.display()
            )));
        }
        let current = self.state.load_full();
        if ops.is_empty() {
            return Ok(Committed {
                revision: current.revision,
                objects: Vec::new(),
            });
        }
        let (next, committed, change) = current.apply(ops)?;
        self.persist(&next)?;
        self.state.store(Arc::new(next));
        let _ = self.changes.send(change);
        Ok(committed)
    }

    fn persist(&self, state: &State) -> Result<(), StoreError> {
        let temp = self.dir.join(TEMP_FILE);
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&temp, "remove", e)),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| io_err(&temp, "create", e))?;
        write_state(state, &mut f, &temp)?;
        f.sync_all().map_err(|e| io_err(&temp, "fsync", e))?;
        drop(f);
        let path = self.dir.join(STATE_FILE);
        fs::rename(&temp, &path).map_err(|e| io_err(&path, "rename over", e))?;
        // The rename is durable only once the folder entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, "fsync", e))
    }
}

#[async_trait]
impl Store for FileStore {
    async fn list(&self) -> Result<Listing, StoreError> {
        Ok(self.inner.state.load().listing())
    }

    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        Ok(self.inner.state.load().objects.get(key).cloned())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.commit(ops))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.inner.state.load().revision)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Precondition;
    use super::*;
    use model::Kind;

    fn secret(name: &str) -> Resource {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{name}"}},"type":"kubernetes.io/tls","data":{{"tls.crt":"Y2VydA==","tls.key":"a2V5"}}}}"#
        );
        model::decode_resource(body.as_bytes(), model::Format::Json, None).expect("decode")
    }

    #[tokio::test]
    async fn writes_survive_a_reopen_with_their_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let store = FileStore::open(&data).expect("open");
        store
            .put(secret("a"), Precondition::Absent)
            .await
            .expect("put a");
        let b = store
            .put(secret("b"), Precondition::Absent)
            .await
            .expect("put b");
        store
            .delete(
                &ResourceKey::new(Kind::Secret, "default", "a"),
                Precondition::Version(1),
            )
            .await
            .expect("delete a");
        let before = store.list().await.expect("list");
        drop(store);

        let again = FileStore::open(&data).expect("reopen");
        let after = again.list().await.expect("list");
        assert_eq!(after.revision, 3);
        assert_eq!(after.items, before.items);
        assert_eq!(after.items, vec![b.clone()]);
        // Secrets are stored whole, private key included.
        let Resource::Secret(s) = &after.items[0] else {
            panic!("not a secret")
        };
        assert_eq!(s.data.get("tls.key").map(String::as_str), Some("a2V5"));
    }

    #[tokio::test]
    async fn files_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("nested").join("data");
        let store = FileStore::open(&data).expect("open");
        store
            .put(secret("a"), Precondition::Any)
            .await
            .expect("put");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(STATE_FILE)), 0o600);
        assert!(!data.join(TEMP_FILE).exists());
    }

    #[tokio::test]
    async fn a_leftover_temp_file_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        store
            .put(secret("a"), Precondition::Any)
            .await
            .expect("put");
        drop(store);
        // A crash between writing the temp file and the rename.
        fs::write(dir.path().join(TEMP_FILE), b"{\"revision\": 99, \"obj").expect("write");
        let again = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(again.revision().await.expect("rev"), 1);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[tokio::test]
    async fn a_data_dir_has_one_owner_until_it_hands_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = FileStore::open(dir.path()).expect("open");
        old.put(secret("a"), Precondition::Any).await.expect("put");
        let err = FileStore::open(dir.path()).expect_err("second owner");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        // The new owner waits while the old one still holds the dir, and gets it once handed over.
        let waiting = {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || FileStore::open_waiting(&path, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiting.is_finished(),
            "opened while the old owner held the dir"
        );
        old.hand_over();
        let new = waiting
            .join()
            .expect("thread")
            .expect("open after hand-over");
        assert_eq!(new.revision().await.expect("rev"), 1);
        // The old owner still reads, but its writes no longer reach the file.
        assert_eq!(old.list().await.expect("list").items.len(), 1);
        let err = old
            .put(secret("b"), Precondition::Any)
            .await
            .expect_err("write after hand-over");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        new.put(secret("c"), Precondition::Any).await.expect("put");
        drop(new);
        let again = FileStore::open(dir.path()).expect("reopen");
        let names: Vec<String> = again
            .list()
            .await
            .expect("list")
            .items
            .iter()
            .map(|r| r.key().name.clone())
            .collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[tokio::test]
    async fn a_torn_state_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(STATE_FILE), b"{\"revision\": 3, \"obj").expect("write");
        let err = FileStore::open(dir.path()).expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn state_problems_are_named_in_file_order() {
        let vs = |rv: &str| {
            format!(
                r#"{{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{{"name":"a{rv}","resourceVersion":"{rv}"}},"spec":{{"hosts":["a"]}}}}"#
            )
        };
        let err = |doc: &str| decode_state(doc.as_bytes()).expect_err(doc);
        assert_eq!(err(r#"{"objects": []}"#), "no revision");
        assert_eq!(err(r#"[1, 2]"#), "no revision");
        assert_eq!(err(r#"{"objects": 3, "revision": -1}"#), "no revision");
        assert_eq!(
            err(r#"{"objects": {"a": 1}, "revision": 1}"#),
            "objects is not an array"
        );
        let bad = format!(
            r#"{{"revision": 2, "objects": [{}, {{"kind": "Nope"}}]}}"#,
            vs("3")
        );
        assert_eq!(
            err(&bad),
            "objects[0]: resourceVersion missing or after the revision"
        );
        let bad = format!(
            r#"{{"revision": 2, "objects": [{}, {{"kind": "Nope"}}]}}"#,
            vs("2")
        );
        assert!(err(&bad).starts_with("objects[1]: kind: unsupported kind"));
        // The revision may come last, and an unknown key is ignored.
        let ok = format!(
            r#"{{"x": [{{}}], "objects": [{}, {}], "revision": 2}}"#,
            vs("1"),
            vs("2")
        );
        let state = decode_state(ok.as_bytes()).expect("decode");
        assert_eq!((state.revision, state.objects.len()), (2, 2));
        assert!(err(r#"{"revision": 2} x"#).contains("trailing characters"));
    }

    #[tokio::test]
    async fn the_state_file_is_the_objects_as_the_api_shows_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        let a = store
            .put(secret("a"), Precondition::Any)
            .await
            .expect("put");
        let bytes = fs::read(dir.path().join(STATE_FILE)).expect("read");
        let doc = serde_json::json!({ "revision": 1, "objects": [a.to_value()] });
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            serde_json::to_string_pretty(&doc).expect("encode")
        );
    }

    #[tokio::test]
    async fn a_rejected_commit_leaves_the_file_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open");
        store
            .put(secret("a"), Precondition::Any)
            .await
            .expect("put");
        let before = fs::read(dir.path().join(STATE_FILE)).expect("read");
        let err = store
            .commit(vec![
                Op::Put {
                    resource: secret("b"),
                    expected: Precondition::Any,
                },
                Op::Put {
                    resource: secret("a"),
                    expected: Precondition::Absent,
                },
            ])
            .await
            .expect_err("exists");
        assert!(matches!(err, StoreError::AlreadyExists { .. }));
        assert_eq!(fs::read(dir.path().join(STATE_FILE)).expect("read"), before);
        assert_eq!(store.list().await.expect("list").items.len(), 1);
    }
}
