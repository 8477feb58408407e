//! TLS on listeners (SSL offload): certificates loaded from PEM files, the one served chosen by
//! the client's SNI name, kept current by watching the files.
//!
//! TMG could bind one certificate per IP address; here a listener holds any number, and each
//! handshake gets the first certificate (in config order) that answers the name the client asked
//! for, or the listener's default when it asked for none or for a name no certificate has.
//!
//! A listener's certificates are one [`CertSet`], loaded whole and validated (every key must
//! belong to its certificate) before it is swapped in through arc-swap. A reload that fails is
//! logged with the file and the reason, and the previous set stays; connections already
//! established keep the certificate they were handshaken with and are never dropped.
//!
//! PEM loading, the key/certificate checks and the process's rustls crypto provider (ring) live
//! in `pem`, which the config validation and the upstream side (`bridge`)
//! share; [`provider`] is re-exported here. This module does not accept connections: `server`
//! does, with the [`TlsAcceptor`] built here.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::config::CertificateConfig;
use crate::names::HostPattern;
use crate::pem::load_pair;
pub use crate::pem::provider;

/// Quiet time after the last change to a certificate's folder before the set is reloaded:
/// tools that write a certificate and then its key are given the time to write both.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// ALPN protocol identifiers.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The protocol versions farmgate speaks on either side: TLS 1.3 and 1.2, nothing older.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// One loaded certificate of a listener.
struct Entry {
    key: Arc<CertifiedKey>,
    /// Names from the config; empty: the certificate's own names decide.
    names: Vec<HostPattern>,
}

/// A listener's certificates, loaded and checked together.
pub struct CertSet {
    entries: Vec<Entry>,
    default: usize,
    /// Digest of every file's bytes, to tell a real change from a touched file.
    digest: [u8; 32],
}

impl CertSet {
    pub fn load(sources: &[CertificateConfig]) -> Result<CertSet, String> {
        let mut entries = Vec::with_capacity(sources.len());
        let mut all = Sha256::new();
        for s in sources {
            let (key, digest) = load_pair(&s.cert, &s.key).map_err(|e| e.message)?;
            all.update(digest);
            entries.push(Entry {
                key,
                names: s.names.clone(),
            });
        }
        if entries.is_empty() {
            return Err("the listener has no certificate".into());
        }
        Ok(CertSet {
            entries,
            default: sources.iter().position(|s| s.default).unwrap_or(0),
            digest: all.finalize().into(),
        })
    }

    /// The certificate for an SNI name: the first that answers it, else the default.
    fn choose(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let server_name = ServerName::try_from(name.as_str()).ok();
            for e in &self.entries {
                let answers = if e.names.is_empty() {
                    server_name
                        .as_ref()
                        .is_some_and(|n| certificate_covers(&e.key, n))
                } else {
                    e.names.iter().any(|p| pattern_matches(p, &name))
                };
                if answers {
                    return &e.key;
                }
            }
        }
        &self.entries[self.default].key
    }
}

/// Whether the end-entity certificate is valid for `name` (its SAN entries, wildcards by the
/// RFC 6125 rules webpki applies).
fn certificate_covers(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.end_entity_cert()
        .ok()
        .and_then(|c| webpki::EndEntityCert::try_from(c).ok())
        .is_some_and(|c| c.verify_is_valid_for_subject_name(name).is_ok())
}

/// A configured certificate name: exact, `*.domain` for exactly one more label, or `*`.
fn pattern_matches(p: &HostPattern, name: &str) -> bool {
    match p {
        HostPattern::Any => true,
        HostPattern::Exact(e) => e == name,
        HostPattern::Suffix(s) => name
            .strip_suffix(s.as_str())
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
    }
}

/// The certificates of one listener, current and reloadable; the rustls resolver.
pub struct CertStore {
    listener: String,
    sources: Vec<CertificateConfig>,
    current: ArcSwap<CertSet>,
    /// Successful reloads that changed the set.
    reloads: AtomicU64,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("listener", &self.listener)
            .field("certificates", &self.sources.len())
            .finish()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are byte for byte what is loaded.
    Unchanged,
    Swapped,
    /// The new files did not load; the previous set stays.
    Failed(String),
}

impl CertStore {
    pub fn load(listener: &str, sources: &[CertificateConfig]) -> Result<CertStore, String> {
        let set = CertSet::load(sources)?;
        Ok(CertStore {
            listener: listener.to_string(),
            sources: sources.to_vec(),
            current: ArcSwap::from_pointee(set),
            reloads: AtomicU64::new(0),
        })
    }

    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Loads the files again; swaps the new set in only when all of it loads.
    pub fn reload(&self) -> Reloaded {
        match CertSet::load(&self.sources) {
            Ok(set) if set.digest == self.current.load().digest => Reloaded::Unchanged,
            Ok(set) => {
                self.current.store(Arc::new(set));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Reloaded::Swapped
            }
            Err(e) => Reloaded::Failed(e),
        }
    }

    fn log(&self, outcome: &Reloaded) {
        match outcome {
            Reloaded::Unchanged => {}
            Reloaded::Swapped => tracing::info!(
                listener = %self.listener, certificates = self.sources.len(),
                "certificates reloaded; new connections get them"
            ),
            Reloaded::Failed(e) => tracing::error!(
                listener = %self.listener, error = %e,
                "certificates not reloaded; the previous ones stay in use"
            ),
        }
    }

    /// The rustls server config of a listener using this store: TLS 1.3 and 1.2, the server's
    /// cipher suite order, ALPN `h2` (when `http2`) and `http/1.1`.
    pub fn server_config(self: &Arc<Self>, http2: bool) -> Arc<ServerConfig> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        cfg.ignore_client_order = true;
        cfg.alpn_protocols = if http2 {
            vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
        } else {
            vec![ALPN_HTTP11.to_vec()]
        };
        Arc::new(cfg)
    }

    pub fn acceptor(self: &Arc<Self>, http2: bool) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config(http2))
    }

    /// Watches the folders of the certificate and key files and reloads the set when anything
    /// in them changes (debounced), until the returned task is aborted. Folders rather than
    /// files, because certificates are usually replaced by renaming a new file over the old.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let dirs: BTreeSet<PathBuf> = self
            .sources
            .iter()
            .flat_map(|s| [&s.cert, &s.key])
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            })
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the files (as a reload does) raises access events; only changes count.
                if let Ok(e) = event
                    && !matches!(e.kind, notify::EventKind::Access(_))
                {
                    let _ = tx.send(());
                }
            })
            .map_err(std::io::Error::other)?;
        for d in &dirs {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(std::io::Error::other)?;
        }
        let store = Arc::clone(self);
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                while let Ok(Some(())) = tokio::time::timeout(RELOAD_DEBOUNCE, rx.recv()).await {}
                let s = Arc::clone(&store);
                // Reading files and parsing keys is blocking work.
                if let Ok(outcome) = tokio::task::spawn_blocking(move || s.reload()).await {
                    store.log(&outcome);
                }
            }
        }))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.current.load().choose(hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_match_one_label_under_a_wildcard() {
        let p = HostPattern::parse("*.contoso.com").unwrap();
        assert!(pattern_matches(&p, "www.contoso.com"));
        assert!(!pattern_matches(&p, "a.b.contoso.com"));
        assert!(!pattern_matches(&p, "contoso.com"));
        let e = HostPattern::parse("www.contoso.com").unwrap();
        assert!(pattern_matches(&e, "www.contoso.com"));
        assert!(!pattern_matches(&e, "contoso.com"));
    }
}
