//! TLS for the API's TCP listener (`[api] tls_cert` and `tls_key`): rustls, with ring's
//! cryptography, TLS 1.2 and 1.3, no client certificates (clients prove themselves with
//! the bearer token, inside the TLS session).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use vmnap_config::TlsFiles;

use crate::error::StartError;

/// The server side of TLS from `files`: the certificate chain and its key, read now. A key
/// file that others than its owner can read or change is refused, as the token file is.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, StartError> {
    let err = |path: &Path, message: String| StartError::Tls {
        path: path.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err(&files.cert, "it holds no PEM certificate".into()));
    }
    let mode = std::fs::metadata(&files.key)
        .map_err(|e| err(&files.key, e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(
            &files.key,
            format!(
                "its mode is {:04o}: others than its owner can read or change it; `chmod 600 {}`",
                mode & 0o7777,
                files.key.display()
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        err(
            &files.key,
            format!("{e}: want a PEM private key (PKCS#8, PKCS#1 or SEC1)"),
        )
    })?;
    // ring's provider is deprecated for want of post-quantum key exchange; aws-lc has it,
    // at the price of a much longer build (and cmake on some hosts). For an admin API on a
    // host's network, X25519 and the NIST curves will do until then.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            err(
                &files.cert,
                format!(
                    "the certificate and the key in {} do not go together: {e}",
                    files.key.display()
                ),
            )
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate and key for 127.0.0.1 in a directory of their own; the key's mode is
    /// `mode`.
    fn files(tag: &str, mode: u32) -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("vmnap-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).expect("cert");
        std::fs::write(&files.key, made.key_pair.serialize_pem()).expect("key");
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        files
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config() {
        let f = files("ok", 0o600);
        assert!(server_config(&f).is_ok());
        let _ = std::fs::remove_dir_all(f.cert.parent().expect("dir"));
    }

    #[test]
    fn a_key_others_can_read_a_key_of_another_certificate_and_no_certificate_are_refused() {
        let f = files("mode", 0o644);
        let e = server_config(&f)
            .expect_err("a key readable by all")
            .to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        let other = files("other", 0o600);
        let mixed = TlsFiles {
            cert: f.cert.clone(),
            key: other.key.clone(),
        };
        let e = server_config(&mixed)
            .expect_err("a key of another certificate")
            .to_string();
        assert!(e.contains("do not go together"), "{e}");
        std::fs::write(&f.cert, "not a certificate\n").expect("write");
        let e = server_config(&TlsFiles {
            cert: f.cert.clone(),
            key: other.key.clone(),
        })
        .expect_err("no certificate")
        .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        for d in [&f, &other] {
            let _ = std::fs::remove_dir_all(d.cert.parent().expect("dir"));
        }
    }
}
