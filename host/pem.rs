//! PEM loading and the checks that make a certificate/key pair or a CA bundle usable: every
//! certificate parses, the private key belongs to the first certificate, and each CA certificate
//! can be a trust anchor. Also the process's rustls crypto provider (ring), which loading a
//! private key needs; [`crate::tls`] re-exports it.
//!
//! Config validation ([`crate::config`]), listener TLS ([`crate::tls`]) and the upstream side
//! (`bridge`) share these. This module is a leaf: it imports no other farmgate module, so
//! `config` can check the files it names without importing `tls`. It reads files and nothing
//! else: it must not build TLS configs, accept or open connections, or keep state beyond the
//! provider.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::InconsistentKeys;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The crypto provider every TLS config of the process uses: *ring* (it builds with a plain C
/// compiler, where aws-lc-rs needs cmake and clang). Also installed as the process default so a
/// library that asks for the default gets the same one.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        let p = rustls::crypto::ring::default_provider();
        let _ = p.clone().install_default();
        Arc::new(p)
    }))
}

/// Which file of a certificate/key pair a load error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFile {
    Cert,
    Key,
}

/// Why a certificate/key pair cannot be used.
#[derive(Debug, Clone)]
pub struct PairError {
    pub file: PairFile,
    pub message: String,
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads a PEM certificate chain and its private key, and checks that the key belongs to the
/// first certificate. Also returns a digest of both files' bytes.
pub fn load_pair(cert: &Path, key: &Path) -> Result<(Arc<CertifiedKey>, [u8; 32]), PairError> {
    let cert_err = |message: String| PairError {
        file: PairFile::Cert,
        message,
    };
    let key_err = |message: String| PairError {
        file: PairFile::Key,
        message,
    };
    let cert_pem = std::fs::read(cert)
        .map_err(|e| cert_err(format!("cannot read {}: {e}", cert.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("{} is not valid PEM: {e}", cert.display())))?;
    let Some(first) = chain.first() else {
        return Err(cert_err(format!(
            "{} holds no certificate (a \"BEGIN CERTIFICATE\" block)",
            cert.display()
        )));
    };
    webpki::EndEntityCert::try_from(first).map_err(|e| {
        cert_err(format!(
            "the first certificate in {} cannot be parsed: {e}",
            cert.display()
        ))
    })?;
    let key_pem =
        std::fs::read(key).map_err(|e| key_err(format!("cannot read {}: {e}", key.display())))?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => key_err(format!(
            "{} holds no private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM block)",
            key.display()
        )),
        e => key_err(format!("{} is not valid PEM: {e}", key.display())),
    })?;
    let signing = provider().key_provider.load_private_key(der).map_err(|e| {
        key_err(format!(
            "the private key in {} cannot be used: {e}",
            key.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(key_err(format!(
                "the private key in {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            )));
        }
        Err(e) => {
            return Err(key_err(format!(
                "the key in {} cannot be checked against {}: {e}",
                key.display(),
                cert.display()
            )));
        }
    }
    let mut digest = Sha256::new();
    digest.update(&cert_pem);
    digest.update(&key_pem);
    Ok((Arc::new(certified), digest.finalize().into()))
}

/// Reads a PEM bundle of CA certificates, each checked to be usable as a trust anchor.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (a \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        webpki::anchor_from_trusted_cert(c).map_err(|e| {
            format!(
                "certificate {} in {} cannot be a trust anchor: {e}",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_file() {
        let e = load_pair(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .err()
        .unwrap();
        assert_eq!(e.file, PairFile::Cert);
        assert!(e.message.contains("/nonexistent/c.pem"), "{e}");
        let e = load_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
