//! Throwaway certificate authorities and certificates for the TLS test
//! servers, made with the `openssl` command-line tool (RSA 2048, valid for
//! two days).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A self-signed CA whose files live in one folder.
#[derive(Debug, Clone)]
pub struct TestCa {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A certificate issued by a [`TestCa`] and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, unencrypted).
    pub key: PathBuf,
}

impl TestCa {
    /// Makes a CA named `CN={name}` in `dir` (`{name}.crt`, `{name}.key`).
    /// Give different CAs different names: a verifier looks the issuer up
    /// by name.
    pub fn create(dir: &Path, name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            cert: dir.join(cert),
            key: dir.join(key),
        })
    }

    /// The CA certificate (PEM), what clients trust.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// A server certificate `CN={name}` for the subject alternative names
    /// `sans` (e.g. `DNS:localhost`, `IP:127.0.0.1`).
    pub fn server_cert(&self, name: &str, sans: &[&str]) -> io::Result<Issued> {
        self.issue(
            name,
            &format!("subjectAltName={}\nextendedKeyUsage=serverAuth\n", sans.join(",")),
        )
    }

    /// A client certificate `CN={name}`, for servers that require one.
    pub fn client_cert(&self, name: &str) -> io::Result<Issued> {
        self.issue(name, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, name: &str, extensions: &str) -> io::Result<Issued> {
        let (cert, key, csr, ext) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        std::fs::write(self.dir.join(&ext), extensions)?;
        let (ca_cert, ca_key) = (self.cert.display().to_string(), self.key.display().to_string());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
        Ok(Issued {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        })
    }
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run openssl (it makes the certificates of the TLS test servers): {e}"),
            )
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
