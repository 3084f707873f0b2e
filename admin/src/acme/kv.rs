//! Where the ACME client keeps its own state (the account, pending challenges, order locks):
//! beside the resources, not among them (none of it is a resource the API serves). On etcd it
//! lives under `<prefix>.acme/` (outside the store's `<prefix>/`, so the resource store never
//! lists it), shared by every replica, with compare-and-swap on each key's `mod_revision`; with
//! the file store, in one JSON file in the data folder, for the one process that owns it.

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A value and the version a compare-and-swap must name to replace it.
pub type Versioned = (String, i64);

/// A small key-value store with compare-and-swap.
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, String>;
    /// Writes `value` if the key is at `expected` (`None`: absent); false when it is not.
    async fn cas(&self, key: &str, value: String, expected: Option<i64>) -> Result<bool, String>;
    async fn delete(&self, key: &str) -> Result<(), String>;
    /// Every key under `prefix`, with its value.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, String>;
}

/// The file-store flavour: one process, one JSON file written whole (temp file, fsync, rename).
pub struct FileKv {
    path: PathBuf,
    state: tokio::sync::Mutex<BTreeMap<String, Versioned>>,
}

impl FileKv {
    pub fn open(data_dir: &Path) -> Result<FileKv, String> {
        let path = data_dir.join("acme-state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(FileKv {
            path,
            state: tokio::sync::Mutex::new(state),
        })
    }

    fn save(&self, state: &BTreeMap<String, Versioned>) -> Result<(), String> {
        use std::io::Write as _;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        f.write_all(&body).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.path).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Kv for FileKv {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, String> {
        Ok(self.state.lock().await.get(key).cloned())
    }

    async fn cas(&self, key: &str, value: String, expected: Option<i64>) -> Result<bool, String> {
        let mut state = self.state.lock().await;
        let current = state.get(key).map(|(_, v)| *v);
        if current != expected {
            return Ok(false);
        }
        let mut next = state.clone();
        next.insert(key.to_string(), (value, current.unwrap_or(0) + 1));
        self.save(&next)?;
        *state = next;
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        let mut state = self.state.lock().await;
        if state.contains_key(key) {
            let mut next = state.clone();
            next.remove(key);
            self.save(&next)?;
            *state = next;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, String> {
        Ok(self
            .state
            .lock()
            .await
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }
}

/// The etcd flavour, shared by the replicas on one prefix.
pub struct EtcdKv {
    client: Client,
    root: String,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl EtcdKv {
    /// `prefix` is the store's (`--store etcd://…/PREFIX`); the ACME keys go under `PREFIX.acme/`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdKv, String> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| e.to_string())?;
        Ok(EtcdKv {
            client,
            root: format!("{prefix}.acme/"),
        })
    }
}

#[async_trait]
impl Kv for EtcdKv {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, String> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(format!("{}{key}", self.root), None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.kvs().first().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            )
        }))
    }

    async fn cas(&self, key: &str, value: String, expected: Option<i64>) -> Result<bool, String> {
        let k = format!("{}{key}", self.root);
        let when = match expected {
            None => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
            Some(v) => Compare::mod_revision(k.as_str(), CompareOp::Equal, v),
        };
        let txn = Txn::new()
            .when([when])
            .and_then([TxnOp::put(k.as_str(), value, None)]);
        let mut kv = self.client.kv_client();
        let resp = kv.txn(txn).await.map_err(|e| e.to_string())?;
        Ok(resp.succeeded())
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        let mut kv = self.client.kv_client();
        kv.delete(format!("{}{key}", self.root), None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, String> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(
                format!("{}{prefix}", self.root),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                (
                    key.strip_prefix(self.root.as_str())
                        .unwrap_or(&key)
                        .to_string(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_kv_compares_and_swaps_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = FileKv::open(dir.path()).expect("open");
        assert!(kv.cas("lock/a", "me".into(), None).await.expect("cas"));
        // Present now: creating again, or replacing at a wrong version, fails.
        assert!(!kv.cas("lock/a", "you".into(), None).await.expect("cas"));
        let (_, v) = kv.get("lock/a").await.expect("get").expect("present");
        assert!(!kv
            .cas("lock/a", "you".into(), Some(v + 1))
            .await
            .expect("cas"));
        assert!(kv.cas("lock/a", "you".into(), Some(v)).await.expect("cas"));
        assert!(kv.cas("challenge/x", "1".into(), None).await.expect("cas"));
        drop(kv);
        let kv = FileKv::open(dir.path()).expect("reopen");
        assert_eq!(
            kv.get("lock/a")
                .await
                .expect("get")
                .map(|(b, _)| b)
                .as_deref(),
            Some("you")
        );
        assert_eq!(kv.list("challenge/").await.expect("list").len(), 1);
        kv.delete("challenge/x").await.expect("delete");
        assert!(kv.list("challenge/").await.expect("list").is_empty());
    }
}
