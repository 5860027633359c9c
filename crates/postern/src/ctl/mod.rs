//! `postern ctl`: the command-line client of the REST API (docs/src/interfaces.md), with the same
//! tokens
//! and roles as every other client. Each subcommand is one or two API calls; what it prints
//! is the API's answer (`--output json`) or a table of it.

mod client;
mod import;
mod output;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use client::Client;
pub use client::CtlError;
use output::{Columns, Output};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control plane's REST API.
    #[arg(
        long,
        env = "POSTERN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A file holding the API token; without it, the token is `POSTERN_TOKEN`.
    #[arg(long, env = "POSTERN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The CA (PEM) of the API's HTTPS certificate, for a private PKI (`postern pki`'s
    /// ca.pem); without it, the web's roots.
    #[arg(long, env = "POSTERN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Send the token over plain http:// to a host that is not loopback (anyone on the path
    /// can read it and act as you).
    #[arg(long, env = "POSTERN_INSECURE_HTTP", global = true)]
    pub insecure_http: bool,
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn path(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The TLS rules of one direction.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The entry a direction uses when no rule matches.
    #[command(subcommand)]
    Defaults(DefaultsCommand),
    /// Relay domains (with next hops) and trusted networks.
    #[command(subcommand)]
    Relay(DocumentCommand),
    /// The CAs that verify client and next-hop certificates.
    #[command(subcommand)]
    Trust(DocumentCommand),
    /// SMTP limits, delivery and queue settings, tracking retention.
    #[command(subcommand)]
    Settings(DocumentCommand),
    /// What the current policy decides for a client and sender, or a recipient.
    Explain(ExplainArgs),
    /// Message tracking.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Inbound connections, including refused ones and failed handshakes.
    Connections(ConnectionsArgs),
    /// The workers' queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Workers: their versions and connections; drain one.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Policy versions, newest first.
    Versions(Page),
    /// Makes VERSION's policy and settings current again, as a new version.
    Rollback { version: u64 },
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The audit log, newest first.
    Audit(Page),
    /// The token in use: its id and role.
    Whoami,
    /// Rules from another system's files.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Args)]
pub struct Page {
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct RuleFields {
    /// An IP address or network (inbound only), `example.com` or `.example.com`.
    #[arg(long = "match")]
    pub matches: Option<String>,
    /// none, may, encrypt or verify.
    #[arg(long)]
    pub level: Option<String>,
    /// medium or high (256-bit suites only).
    #[arg(long)]
    pub cipher_strength: Option<String>,
    #[arg(long)]
    pub enabled: Option<bool>,
    #[arg(long)]
    pub comment: Option<String>,
}

impl RuleFields {
    /// The fields given, over `base`.
    fn over(self, mut base: Value) -> Value {
        let fields = [
            ("match", self.matches.map(Value::from)),
            ("level", self.level.map(Value::from)),
            ("cipher_strength", self.cipher_strength.map(Value::from)),
            ("enabled", self.enabled.map(Value::from)),
            ("comment", self.comment.map(Value::from)),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                base[key] = v;
            }
        }
        base
    }
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    List {
        #[arg(long, value_enum)]
        direction: Direction,
        #[command(flatten)]
        page: Page,
    },
    /// Adds a rule; the API's warnings are printed with it.
    Add {
        #[arg(long, value_enum)]
        direction: Direction,
        #[command(flatten)]
        rule: RuleFields,
    },
    /// Changes the fields given of rule ID.
    Edit {
        #[arg(long, value_enum)]
        direction: Direction,
        id: String,
        #[command(flatten)]
        rule: RuleFields,
    },
    Rm {
        #[arg(long, value_enum)]
        direction: Direction,
        id: String,
    },
    /// Replaces every rule of the direction, in one version, with FILE's JSON list.
    Replace {
        #[arg(long, value_enum)]
        direction: Direction,
        file: PathBuf,
    },
    /// Replaces every rule of the direction, in one version, with a CSV list
    /// (`match,level,cipher_strength,enabled,comment`, as other gateways' consoles export).
    Import {
        #[arg(long, value_enum)]
        direction: Direction,
        file: PathBuf,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A Postfix `smtp_tls_policy_maps` table into the outbound rules; each line without an
    /// exact equivalent is reported with what it became or why it was skipped.
    PostfixTlsPolicy {
        file: PathBuf,
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DefaultsCommand {
    Show {
        #[arg(long, value_enum)]
        direction: Direction,
    },
    Set {
        #[arg(long, value_enum)]
        direction: Direction,
        level: String,
        #[arg(long)]
        cipher_strength: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DocumentCommand {
    Show,
    /// Replaces it with FILE's JSON (`-`: standard input).
    Set {
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(value_enum)]
    pub direction: Direction,
    #[arg(long)]
    pub client_ip: Option<String>,
    #[arg(long)]
    pub sender: Option<String>,
    #[arg(long)]
    pub recipient: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Searches tracking, newest first.
    Search(Box<MessageFilter>),
    Show {
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct MessageFilter {
    #[arg(long)]
    pub sender: Option<String>,
    #[arg(long)]
    pub recipient: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub queue_id: Option<String>,
    #[arg(long)]
    pub message_id: Option<String>,
    /// RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub worker: Option<String>,
    #[arg(long)]
    pub violation: Option<String>,
    #[command(flatten)]
    pub page: Page,
}

#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    /// Only failed TLS handshakes.
    #[arg(long)]
    pub tls_failed: bool,
    #[command(flatten)]
    pub page: Page,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    List {
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        worker: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Makes message ID's deferred recipients due now.
    Retry { id: String },
    /// Makes everything queued for DESTINATION (all: every message) due now.
    Flush { destination: Option<String> },
    /// Removes message ID from its worker's queue (with a DSN to the sender: --dsn).
    Delete {
        id: String,
        #[arg(long)]
        dsn: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    List,
    /// No new SMTP sessions on worker ID; its whole queue due now.
    Drain {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    List,
    /// Prints the new token's secret once.
    Create {
        /// viewer or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        comment: Option<String>,
    },
    Rm {
        id: String,
    },
}

const RULES: Columns = &[
    ("ID", "id"),
    ("MATCH", "match"),
    ("LEVEL", "level"),
    ("STRENGTH", "cipher_strength"),
    ("ENABLED", "enabled"),
    ("COMMENT", "comment"),
];
const MESSAGES: Columns = &[
    ("ID", "id"),
    ("RECEIVED", "received_at"),
    ("FROM", "sender"),
    ("TO", "recipients"),
    ("STATUS", "status"),
    ("TLS", "marks.tls"),
    ("SUBJECT", "subject"),
];
const CONNECTIONS: Columns = &[
    ("STARTED", "started_at"),
    ("IP", "ip"),
    ("HELO", "helo"),
    ("TLS", "tls.version"),
    ("TLS FAILURE", "tls_failure"),
    ("REFUSED", "refused"),
    ("MESSAGES", "messages"),
];
const QUEUE: Columns = &[
    ("ID", "queue_id"),
    ("WORKER", "worker"),
    ("FROM", "sender"),
    ("RECEIVED", "received_at"),
    ("SIZE", "size"),
];
const WORKERS: Columns = &[
    ("ID", "id"),
    ("CONNECTED", "connected"),
    ("VERSION", "applied_version"),
    ("DRAINING", "draining"),
    ("SMTP", "smtp_addr"),
    ("LAST SEEN", "last_seen"),
    ("LAST NACK", "last_nack"),
];
const VERSIONS: Columns = &[
    ("VERSION", "version"),
    ("AT", "at"),
    ("ACTOR", "actor"),
    ("SUMMARY", "summary"),
];
const TOKENS: Columns = &[
    ("ID", "id"),
    ("ROLE", "role"),
    ("CREATED", "created_at"),
    ("COMMENT", "comment"),
];
const AUDIT: Columns = &[
    ("AT", "at"),
    ("ACTOR", "actor"),
    ("ACTION", "action"),
    ("VERSION", "version"),
    ("SUMMARY", "summary"),
];

/// One API call and how to print its answer.
struct Call {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    columns: Columns,
}

impl Call {
    fn get(path: impl Into<String>, columns: Columns) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            query: vec![],
            body: None,
            columns,
        }
    }

    fn send(method: Method, path: impl Into<String>, body: Option<Value>) -> Call {
        Call {
            method,
            path: path.into(),
            query: vec![],
            body,
            columns: &[],
        }
    }

    /// Adds the query parameters that are set.
    fn with(mut self, params: &[(&str, Option<String>)]) -> Call {
        for (k, v) in params {
            if let Some(v) = v {
                self.query.push((k.to_string(), v.clone()));
            }
        }
        self
    }

    fn page(self, p: Page) -> Call {
        self.with(&[
            ("limit", p.limit.map(|l| l.to_string())),
            ("cursor", p.cursor),
        ])
    }
}

/// FILE's text (`-`: standard input).
fn read_text(file: &std::path::Path) -> Result<String, CtlError> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| CtlError::Usage(format!("{}: {e}", file.display())))
}

fn read_json(file: &std::path::Path) -> Result<Value, CtlError> {
    serde_json::from_str(&read_text(file)?)
        .map_err(|e| CtlError::Usage(format!("{}: {e}", file.display())))
}

pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    client::check_scheme(&args.url, args.insecure_http)?;
    let client = Client::new(&args.url, args.token_file.as_deref(), args.ca.as_deref())?;
    let call = match args.command {
        CtlCommand::Rules(RulesCommand::Import {
            direction,
            file,
            dry_run,
        }) => {
            let rules = import::csv_rules(&read_text(&file)?);
            return replace_all(&client, direction, rules, dry_run, args.output).await;
        }
        CtlCommand::Import(ImportCommand::PostfixTlsPolicy { file, dry_run }) => {
            let rules = import::postfix_tls_policy(&read_text(&file)?);
            return replace_all(&client, Direction::Outbound, rules, dry_run, args.output).await;
        }
        CtlCommand::Rules(c) => rules(&client, c).await?,
        CtlCommand::Defaults(DefaultsCommand::Show { direction }) => {
            Call::get(format!("/v1/policy/{}/default", direction.path()), &[])
        }
        CtlCommand::Defaults(DefaultsCommand::Set {
            direction,
            level,
            cipher_strength,
        }) => {
            let mut body = json!({"level": level});
            if let Some(s) = cipher_strength {
                body["cipher_strength"] = s.into();
            }
            let path = format!("/v1/policy/{}/default", direction.path());
            Call::send(Method::PUT, path, Some(body))
        }
        CtlCommand::Relay(c) => document("/v1/relay", c)?,
        CtlCommand::Trust(c) => document("/v1/trust", c)?,
        CtlCommand::Settings(c) => document("/v1/settings", c)?,
        CtlCommand::Explain(e) => {
            let body = json!({
                "direction": e.direction.path(),
                "client_ip": e.client_ip,
                "sender": e.sender,
                "recipient": e.recipient,
            });
            Call::send(Method::POST, "/v1/policy/evaluate", Some(body))
        }
        CtlCommand::Messages(MessagesCommand::Search(f)) => Call::get("/v1/messages", MESSAGES)
            .with(&[
                ("sender", f.sender),
                ("recipient", f.recipient),
                ("subject", f.subject),
                ("queue_id", f.queue_id),
                ("message_id", f.message_id),
                ("since", f.since),
                ("until", f.until),
                ("status", f.status),
                ("worker", f.worker),
                ("violation", f.violation),
            ])
            .page(f.page),
        CtlCommand::Messages(MessagesCommand::Show { id }) => {
            Call::get(format!("/v1/messages/{id}"), &[])
        }
        CtlCommand::Connections(c) => Call::get("/v1/connections", CONNECTIONS)
            .with(&[
                ("ip", c.ip),
                ("since", c.since),
                ("until", c.until),
                ("tls_failed", c.tls_failed.then(|| "true".to_string())),
            ])
            .page(c.page),
        CtlCommand::Queue(QueueCommand::List {
            destination,
            reason,
            worker,
            page,
        }) => Call::get("/v1/queue", QUEUE)
            .with(&[
                ("destination", destination),
                ("reason", reason),
                ("worker", worker),
            ])
            .page(page),
        CtlCommand::Queue(QueueCommand::Retry { id }) => {
            Call::send(Method::POST, format!("/v1/queue/{id}/retry"), None)
        }
        CtlCommand::Queue(QueueCommand::Flush { destination }) => Call::send(
            Method::POST,
            "/v1/queue/flush",
            Some(json!({"destination": destination})),
        ),
        CtlCommand::Queue(QueueCommand::Delete { id, dsn }) => {
            Call::send(Method::DELETE, format!("/v1/queue/{id}"), None)
                .with(&[("dsn", Some(dsn.to_string()))])
        }
        CtlCommand::Workers(WorkersCommand::List) => Call::get("/v1/workers", WORKERS),
        CtlCommand::Workers(WorkersCommand::Drain { id }) => {
            Call::send(Method::POST, format!("/v1/workers/{id}/drain"), None)
        }
        CtlCommand::Versions(p) => Call::get("/v1/policy/versions", VERSIONS).page(p),
        CtlCommand::Rollback { version } => Call::send(
            Method::POST,
            "/v1/policy/rollback",
            Some(json!({"version": version})),
        ),
        CtlCommand::Tokens(TokensCommand::List) => Call::get("/v1/tokens", TOKENS),
        CtlCommand::Tokens(TokensCommand::Create { role, comment }) => {
            let mut body = json!({"role": role});
            if let Some(c) = comment {
                body["comment"] = c.into();
            }
            Call::send(Method::POST, "/v1/tokens", Some(body))
        }
        CtlCommand::Tokens(TokensCommand::Rm { id }) => {
            Call::send(Method::DELETE, format!("/v1/tokens/{id}"), None)
        }
        CtlCommand::Audit(p) => Call::get("/v1/audit", AUDIT).page(p),
        CtlCommand::Whoami => Call::get("/v1/whoami", &[]),
    };
    let answer = client
        .call(call.method, &call.path, &call.query, call.body.as_ref())
        .await?;
    output::print(&answer, args.output, call.columns);
    Ok(())
}

async fn rules(client: &Client, command: RulesCommand) -> Result<Call, CtlError> {
    let base = |d: Direction| format!("/v1/policy/{}/rules", d.path());
    Ok(match command {
        RulesCommand::List { direction, page } => Call::get(base(direction), RULES).page(page),
        RulesCommand::Add { direction, rule } => {
            if rule.matches.is_none() || rule.level.is_none() {
                return Err(CtlError::Usage(
                    "rules add needs --match and --level".into(),
                ));
            }
            Call::send(Method::POST, base(direction), Some(rule.over(json!({}))))
        }
        RulesCommand::Edit {
            direction,
            id,
            rule,
        } => {
            let path = format!("{}/{id}", base(direction));
            let mut current = client.call(Method::GET, &path, &[], None).await?;
            if let Some(map) = current.as_object_mut() {
                map.remove("id");
            }
            Call::send(Method::PUT, path, Some(rule.over(current)))
        }
        RulesCommand::Rm { direction, id } => {
            Call::send(Method::DELETE, format!("{}/{id}", base(direction)), None)
        }
        RulesCommand::Replace { direction, file } => {
            let items = read_json(&file)?;
            let body = if items.is_array() {
                json!({"items": items})
            } else {
                items
            };
            Call::send(Method::PUT, base(direction), Some(body))
        }
        RulesCommand::Import { .. } => unreachable!("run() imports"),
    })
}

/// Replaces the direction's rules with an import's, in one version (`dry_run`: prints the
/// difference against the current rules instead). The notes go to standard error.
async fn replace_all(
    client: &Client,
    direction: Direction,
    imported: import::Imported,
    dry_run: bool,
    output: Output,
) -> Result<(), CtlError> {
    for note in &imported.notes {
        eprintln!("{note}");
    }
    let path = format!("/v1/policy/{}/rules", direction.path());
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(std::time::Duration::from_millis(100));
    progress.set_message("reading the current rules");
    let mut current = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit".to_string(), "100000".to_string())];
        query.extend(cursor.take().map(|c| ("cursor".to_string(), c)));
        let page = client.call(Method::GET, &path, &query, None).await?;
        current.extend(page["items"].as_array().cloned().unwrap_or_default());
        progress.set_message(format!("read {} current rules", current.len()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let changes = import::difference(&current, &imported.rules);
    if dry_run {
        progress.finish_and_clear();
        for change in &changes {
            println!("{change}");
        }
        eprintln!(
            "dry run: {} rules would replace {} ({} changes); nothing was changed",
            imported.rules.len(),
            current.len(),
            changes.len()
        );
        return Ok(());
    }
    progress.set_message(format!("replacing with {} rules", imported.rules.len()));
    let body = json!({"items": imported.rules});
    let answer = client.call(Method::PUT, &path, &[], Some(&body)).await;
    progress.finish_and_clear();
    let answer = answer?;
    match output {
        Output::Json => output::print(&answer, output, &[]),
        Output::Table => {
            println!(
                "{} rules in place ({} changes)",
                imported.rules.len(),
                changes.len()
            );
            for w in answer["warnings"].as_array().into_iter().flatten() {
                println!("warning: {}: {}", cell(&w["code"]), cell(&w["detail"]));
            }
        }
    }
    Ok(())
}

fn document(path: &str, command: DocumentCommand) -> Result<Call, CtlError> {
    Ok(match command {
        DocumentCommand::Show => Call::get(path, &[]),
        DocumentCommand::Set { file } => Call::send(Method::PUT, path, Some(read_json(&file)?)),
    })
}

fn cell(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}
