//! The REST client of `postern ctl`: the base URL, the token, the CA of a private PKI, and the
//! errors scripts tell apart by exit code.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

/// Why a command failed; each kind has its exit code (README "postern ctl").
#[derive(Debug)]
pub enum CtlError {
    /// Bad flags or files, no token: exit 2.
    Usage(String),
    /// The API refused the request (4xx): exit 1.
    Refused { status: u16, problem: Value },
    /// The API could not be reached or failed (5xx): exit 3.
    Unavailable(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unavailable(_) => 3,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Usage(m) | CtlError::Unavailable(m) => f.write_str(m),
            CtlError::Refused { status, problem } => {
                let text = |k: &str| problem[k].as_str().unwrap_or("").to_string();
                write!(f, "{status} {}", text("title"))?;
                let detail = text("detail");
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                // Each field error on its own line, named by its JSON pointer.
                for e in problem["errors"].as_array().into_iter().flatten() {
                    let at = e["pointer"].as_str().unwrap_or("");
                    let said = e["detail"].as_str().unwrap_or("");
                    if !detail.contains(said) {
                        write!(f, "\n  {at}: {said}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A token is a password: over `http://` only to loopback (`postern dev`), else only with
/// `--insecure-http`.
pub fn check_scheme(url: &str, insecure: bool) -> Result<(), CtlError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| CtlError::Usage(format!("--url {url}: {e}")))?;
    let host = parsed.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback || insecure => Ok(()),
        "http" => Err(CtlError::Usage(format!(
            "refusing to send the token in plain text to {url}; use https:// or pass --insecure-http"
        ))),
        other => Err(CtlError::Usage(format!(
            "--url {url}: {other}: is not http or https"
        ))),
    }
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// The token comes from `token_file`, else from `POSTERN_TOKEN`.
    pub fn new(
        url: &str,
        token_file: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Client, CtlError> {
        let token = match token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| CtlError::Usage(format!("--token-file {}: {e}", path.display())))?,
            None => std::env::var("POSTERN_TOKEN").map_err(|_| {
                CtlError::Usage("no token: set POSTERN_TOKEN or pass --token-file".into())
            })?,
        };
        // Replacing 200,000 rules is one request of seconds; a minute is an API in trouble.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .use_preconfigured_tls(tls_config(ca)?)
            .build()
            .map_err(|e| CtlError::Usage(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    /// One call; the JSON body of a 2xx (`Null` for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CtlError::Unavailable(format!("{}: {e}", self.base)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| CtlError::Unavailable(format!("reading the response: {e}")))?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        match status {
            200..=299 => Ok(json),
            400..=499 => Err(CtlError::Refused {
                status,
                problem: json,
            }),
            _ => Err(CtlError::Unavailable(format!("{status}: {json}"))),
        }
    }
}

/// rustls with the web's roots, or with `ca` (PEM) alone for a private PKI.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, CtlError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| CtlError::Usage(format!("--ca {}: {e}", path.display())))?;
            let ders = postern_tls::files::ders(&pem);
            if ders.is_empty() {
                return Err(CtlError::Usage(format!(
                    "--ca {}: no certificate",
                    path.display()
                )));
            }
            for der in ders {
                roots
                    .add(der)
                    .map_err(|e| CtlError::Usage(format!("--ca {}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_go_in_plain_text_only_to_loopback() {
        use super::check_scheme;
        for ok in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080/",
            "http://localhost:8080",
            "https://cp.example",
        ] {
            assert!(check_scheme(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://cp.example:8080",
            "http://10.0.0.5",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            assert!(check_scheme(bad, false).is_err(), "{bad}");
        }
        assert!(check_scheme("http://cp.example:8080", true).is_ok());
    }
}
