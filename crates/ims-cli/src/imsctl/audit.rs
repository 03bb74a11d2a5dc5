//! `imsctl audit`: history, as-of, who-could-use, verify and export, online or offline.

use anyhow::Context as _;
use ims_audit::{self as service_audit, LogSource};
use serde_json::{json, Value};

use super::args::*;
use super::render::*;
use super::transport::*;
use super::Usage;

/// `imsctl audit credentials`: the identity log, line by line, with its chain checked.
pub(crate) async fn audit_credentials(
    source: &ims_audit::LogSource,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use ims_identity::directory::{decode_iam_event, IamEvent};
    let mut rows = Vec::new();
    let mut previous = [0u8; 32];
    loop {
        let batch = source.batch(rows.len() as u64 + 1, 1000).await?;
        if batch.envelopes.is_empty() {
            break;
        }
        for envelope in batch.envelopes {
            let position = envelope.position();
            anyhow::ensure!(
                envelope.hash_is_valid() && envelope.prev_hash == previous,
                "the identity log's hash chain is broken at position {position}"
            );
            previous = envelope.hash;
            let at = ims_wire::time::rfc3339(envelope.body.recorded_at_ms);
            let row = match decode_iam_event(&envelope)? {
                IamEvent::CredentialIssued {
                    key_id,
                    role,
                    issued_by,
                    ..
                } => json!({"position": position, "at": at, "type": "credential_issued",
                            "key_id": key_id, "role": role.name(),
                            "tenant": role.tenant().map(|t| t.to_string()), "by": issued_by}),
                IamEvent::CredentialRevoked { key_id, revoked_by } => {
                    json!({"position": position, "at": at, "type": "credential_revoked",
                           "key_id": key_id, "by": revoked_by})
                }
            };
            rows.push(row);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({"items": rows}))?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for row in &rows {
        let whom = match row["tenant"].as_str() {
            Some(tenant) => format!("tenant {tenant}"),
            None => row["role"].as_str().unwrap_or("").to_owned(),
        };
        let what = match row["type"].as_str() {
            Some("credential_issued") => format!(
                "issued {whom} credential {}",
                row["key_id"].as_str().unwrap_or("")
            ),
            _ => format!(
                "revoked credential {}",
                row["key_id"].as_str().unwrap_or("")
            ),
        };
        println!(
            "#{} {} by {}: {what}",
            row["position"],
            row["at"].as_str().unwrap_or(""),
            row["by"].as_str().unwrap_or("")
        );
    }
    println!("chain: ok, {} events", rows.len());
    Ok(std::process::ExitCode::SUCCESS)
}

pub(crate) fn moment(moment: &Moment) -> anyhow::Result<ims_audit::Until> {
    use ims_audit::Until;
    match (&moment.at, moment.position) {
        (Some(at), _) => Ok(Until::Time(
            ims_wire::time::parse_rfc3339(at).map_err(anyhow::Error::msg)?,
        )),
        (None, Some(position)) => Ok(Until::Position(position)),
        (None, None) => usage!("give --at TIME or --position N"),
    }
}

/// `imsctl audit …`: opens the log (offline with --data-dir, else over NATS) and runs the
/// audit command on it.
pub(crate) async fn audit(
    args: AuditArgs,
    nats_url: &str,
    token: Option<&str>,
    region: &str,
    prefix: &str,
    tenant: Option<&str>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let region = ims_domain::RegionId::parse(region)
        .map_err(|e| Usage(format!("--region: {}", e.message)))?;
    let subjects = ims_wire::Subjects::new(prefix);
    let command = match args.command {
        AuditCommand::Region(command) => command,
        AuditCommand::Credentials => {
            let source = match &args.data_dir {
                Some(dir) => LogSource::Offline(
                    ims_identity::Directory::open(dir)
                        .with_context(|| {
                            format!("opening the identity log under {}", dir.display())
                        })?
                        .log()
                        .clone(),
                ),
                None => LogSource::online_identity(
                    connect(nats_url, token, "imsctl-audit").await?,
                    &subjects,
                ),
            };
            return audit_credentials(&source, json).await;
        }
    };
    let source = match &args.data_dir {
        Some(dir) => LogSource::Offline(offline_log(dir, &region)?),
        None => {
            let client = connect(nats_url, token, "imsctl-audit").await?;
            LogSource::online(client, &subjects, &region)
        }
    };
    let tenant = tenant
        .map(ims_domain::TenantId::parse)
        .transpose()
        .map_err(|e| Usage(format!("--tenant: {}", e.message)))?;
    let head = source.head().await?;
    let mut audit = Audit {
        source: Some(source),
        region,
        subjects,
        tenant,
        head,
        json,
        data_dir: args.data_dir,
        store: args.store,
    };
    match command {
        RegionAuditCommand::History { image } => audit.history(image.as_deref()).await?,
        RegionAuditCommand::AsOf {
            moment: at,
            query,
            image,
        } => audit.as_of(&at, query.into(), image).await?,
        RegionAuditCommand::WhoCouldUse { image, moment: at } => {
            audit.who_could_use(&image, &at).await?
        }
        RegionAuditCommand::Verify => return audit.verify().await,
        RegionAuditCommand::Export { from, to, output } => {
            audit.export(from, to, output.as_deref()).await?
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A region's log on disk, refusing a path that holds none.
fn offline_log(
    dir: &std::path::Path,
    region: &ims_domain::RegionId,
) -> anyhow::Result<ims_log::EventLog> {
    let path = crate::runtime::log_path(dir, region);
    // Opening a missing log would create an empty one, which verifies: an auditor who
    // mistyped the path must hear so, never "every hash valid".
    if !path.is_dir() {
        let found: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().join("log").is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            // The identity log has its own audit (`audit credentials`).
            .filter(|name| name != "iam")
            .collect();
        usage!(
            "there is no log of region {region} at {}; check --data-dir and --region \
             (regions with a log there: {})",
            path.display(),
            if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            }
        );
    }
    let log = ims_log::EventLog::open_with_cache(
        &path,
        region.as_str(),
        service_audit::OFFLINE_LOG_CACHE_BYTES,
    )
    .with_context(|| {
        format!(
            "opening the log at {} (is imsd still running on it?)",
            path.display()
        )
    })?;
    // An empty log verifies trivially; it is never what an auditor meant to check.
    if log.head_position() == 0 {
        usage!(
            "the log of region {region} at {} holds no events; check --data-dir and --region",
            path.display()
        );
    }
    Ok(log)
}

/// An audit of one region's log.
struct Audit {
    /// `None` only while an offline verify reads the live read models with the log closed.
    source: Option<LogSource>,
    region: ims_domain::RegionId,
    subjects: ims_wire::Subjects,
    tenant: Option<ims_domain::TenantId>,
    head: u64,
    json: bool,
    data_dir: Option<std::path::PathBuf>,
    store: ims_store::StoreLocation,
}

fn parse_image(id: &str) -> Result<ims_domain::ImageId, Usage> {
    ims_domain::ImageId::parse(id).map_err(|e| Usage(e.message))
}

impl Audit {
    /// Prints `value` with --json, else `human`.
    fn print(&self, value: &Value, human: String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{human}");
        }
    }

    async fn history(&self, image: Option<&str>) -> anyhow::Result<()> {
        let image = image.map(parse_image).transpose()?;
        if image.is_none() && self.tenant.is_none() {
            usage!("give --image ID and/or --tenant T");
        }
        let bar = progress_bar(self.head, self.json, "reading history");
        let items = service_audit::history(self.source(), image, self.tenant.as_ref(), |p| {
            bar.set_position(p)
        })
        .await?;
        bar.finish_and_clear();
        let human = items
            .iter()
            .map(|i| {
                format!(
                    "#{} {} {} cmd {} {}",
                    i["position"],
                    i["recorded_at"].as_str().unwrap_or(""),
                    i["actor"].as_str().unwrap_or(""),
                    i["command_id"].as_str().unwrap_or("-"),
                    i["summary"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.print(
            &json!({"items": items}),
            if human.is_empty() {
                "(no events)".into()
            } else {
                human
            },
        );
        Ok(())
    }

    async fn as_of(
        &self,
        at: &Moment,
        query: ims_wire::Query,
        image: Option<String>,
    ) -> anyhow::Result<()> {
        let Some(tenant) = &self.tenant else {
            usage!("audit as-of answers for a tenant: pass --tenant T");
        };
        let params = ims_projection::queries::QueryParams {
            image_id: image,
            limit: Some(1000),
            include_deprecated: Some(true),
            ..Default::default()
        };
        let (position, answer) = match &self.data_dir {
            // On disk, from the projector's newest snapshots at or before the moment.
            Some(dir) => {
                let projections = ims_projector::projections_path(dir, &self.region);
                let snapshots = ims_projector::snapshots_path(&projections);
                let bar = progress_bar(self.head, self.json, "replaying");
                let replayed = service_audit::replay_from_snapshots(
                    self.source(),
                    &self.region,
                    moment(at)?,
                    &snapshots,
                    |p| bar.set_position(p),
                )
                .await?;
                bar.finish_and_clear();
                (replayed.position, replayed.query(tenant, query, &params)?)
            }
            // Online, by the service that holds the read models and their snapshots.
            None => {
                let LogSource::Online { client, .. } = self.source() else {
                    unreachable!("without a data dir the source is the service")
                };
                service_audit::as_of_online(
                    client,
                    &self.subjects,
                    &self.region,
                    tenant,
                    query,
                    params,
                    moment(at)?,
                )
                .await?
            }
        };
        self.print(
            &answer,
            format!(
                "as of position {position}:\n{}",
                render_query(query, &answer)
            ),
        );
        Ok(())
    }

    async fn who_could_use(&self, image: &str, at: &Moment) -> anyhow::Result<()> {
        let image = parse_image(image)?;
        let answer = match self.source() {
            // On disk, the image's stream and the tenants' registrations say it all.
            LogSource::Offline(log) => {
                service_audit::who_could_use_offline(log, image, moment(at)?)?
            }
            // Online, the process that holds the log reads the same streams.
            LogSource::Online { client, .. } => {
                service_audit::who_could_use_online(
                    client,
                    &self.subjects,
                    &self.region,
                    image,
                    moment(at)?,
                )
                .await?
            }
        };
        let lines: Vec<String> = answer["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{:<32} {}",
                    t["tenant"].as_str().unwrap_or(""),
                    t["through"].as_str().unwrap_or("")
                )
            })
            .collect();
        self.print(
            &answer,
            format!(
                "image {image} as of position {}:\n{}",
                answer["position"],
                if lines.is_empty() {
                    "(no tenant)".to_owned()
                } else {
                    lines.join("\n")
                }
            ),
        );
        Ok(())
    }

    /// Checks the image files in `dir`'s store against the log, through the catalog rebuilt
    /// for the models' check (or a new rebuild).
    async fn verify_objects(
        &self,
        dir: &std::path::Path,
        rebuilt: Option<service_audit::Rebuilt<ims_projection::Catalog>>,
    ) -> anyhow::Result<Vec<String>> {
        // Read only: an audit creates nothing in the data dir it checks.
        let store = ims_store::ImageStore::open_existing(&self.store, dir, &self.region)
            .with_context(|| format!("opening the image store of region {}", self.region))?;
        let mut catalog = match rebuilt {
            Some(catalog) => catalog,
            None => service_audit::Rebuilt::new(ims_projection::Catalog)?,
        };
        Ok(service_audit::verify_objects(self.source(), &mut catalog, store.as_ref()).await?)
    }

    /// The live read models in `dir` against a rebuild, the log closed while they are read
    /// (see [`service_audit::verify_models_offline`]).
    async fn verify_models_offline(
        &mut self,
        dir: &std::path::Path,
    ) -> anyhow::Result<(
        Vec<(String, Option<String>)>,
        service_audit::Rebuilt<ims_projection::Catalog>,
    )> {
        let data_dir = self.data_dir.clone().expect("offline has a data dir");
        let region = self.region.clone();
        let open_log = || {
            offline_log(&data_dir, &region)
                .map(LogSource::Offline)
                .map_err(|error| service_audit::AuditError::Answered(format!("{error:#}")))
        };
        self.source = None;
        let verified = service_audit::verify_models_offline(open_log, dir).await?;
        self.source = Some(open_log()?);
        Ok(verified)
    }

    fn source(&self) -> &LogSource {
        self.source.as_ref().expect("the log is open")
    }

    async fn verify(&mut self) -> anyhow::Result<std::process::ExitCode> {
        let bar = progress_bar(self.head, self.json, "verifying the chain");
        let chain = service_audit::verify_chain(self.source(), |p| bar.set_position(p)).await?;
        bar.finish_and_clear();
        let projections = self
            .data_dir
            .as_ref()
            .map(|dir| ims_projector::projections_path(dir, &self.region));
        let (models, rebuilt) = match (&chain, &projections) {
            (Ok(_), Some(dir)) if !dir.exists() => (Vec::new(), None),
            (Ok(_), Some(dir)) => {
                let (models, catalog) = self.verify_models_offline(dir).await?;
                (models, Some(catalog))
            }
            (Ok(_), None) => {
                let LogSource::Online { client, .. } = self.source() else {
                    unreachable!("offline has a data dir")
                };
                let live = service_audit::LiveService {
                    client,
                    subjects: &self.subjects,
                    region: &self.region,
                };
                let (models, catalog) = service_audit::verify_models(self.source(), live).await?;
                (models, Some(catalog))
            }
            (Err(_), _) => (Vec::new(), None),
        };
        // Imported files are checked where they are: offline, in the data dir's store.
        let objects = match (&chain, &self.data_dir) {
            (Ok(_), Some(dir)) => Some(self.verify_objects(dir, rebuilt).await?),
            _ => None,
        };
        let ok = chain.is_ok()
            && models.iter().all(|(_, difference)| difference.is_none())
            && objects.as_ref().is_none_or(Vec::is_empty);
        let value = json!({
            "ok": ok,
            "head": self.head,
            "objects": objects.as_ref().map(|problems| json!({"ok": problems.is_empty(), "problems": problems})),
            "chain": match &chain { Ok(_) => json!({"ok": true}), Err((position, problem)) => json!({"ok": false, "first_bad_position": position, "problem": problem}) },
            "models": models.iter().map(|(name, difference)| json!({"model": name, "equal_to_rebuild": difference.is_none(), "first_difference": difference})).collect::<Vec<_>>(),
        });
        let mut human = vec![match &chain {
            Ok(head) => format!("chain: ok, positions 1..={head} contiguous, every hash valid"),
            Err((position, problem)) => {
                format!("chain: BROKEN at position {position}: {problem}")
            }
        }];
        for (name, difference) in &models {
            human.push(match difference {
                None => format!("read model {name}: equal to a rebuild from position 1"),
                Some(difference) => {
                    format!("read model {name}: DIFFERS from a rebuild: {difference}")
                }
            });
        }
        human.push(match &objects {
            None => "image files: checked offline only (--data-dir)".to_owned(),
            Some(problems) if problems.is_empty() => {
                "image files: every active imported image's file has its recorded size and SHA-256"
                    .to_owned()
            }
            Some(problems) => format!(
                "image files: {} PROBLEMS\n  {}",
                problems.len(),
                problems.join("\n  ")
            ),
        });
        self.print(&value, human.join("\n"));
        Ok(if ok {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        })
    }

    async fn export(
        &self,
        from: u64,
        to: Option<u64>,
        output: Option<&std::path::Path>,
    ) -> anyhow::Result<()> {
        use std::io::Write as _;
        let to = to.unwrap_or(self.head).min(self.head);
        let mut out: Box<dyn std::io::Write> = match &output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        let bar = progress_bar(
            to.saturating_sub(from) + 1,
            output.is_none() || self.json,
            "exporting",
        );
        let mut written = 0u64;
        self.source()
            .scan(from, to, |batch| -> anyhow::Result<bool> {
                for envelope in batch {
                    serde_json::to_writer(&mut out, &service_audit::event_json(envelope))?;
                    out.write_all(b"\n")?;
                }
                written += batch.len() as u64;
                bar.inc(batch.len() as u64);
                Ok(true)
            })
            .await?;
        out.flush()?;
        drop(out);
        bar.finish_and_clear();
        // On stdout the events are the output; a file gets a line saying what went into it.
        if let Some(path) = output {
            let summary = json!({"exported": written, "from": from, "to": to, "file": path.display().to_string()});
            self.print(
                &summary,
                format!(
                    "exported {written} events (positions {from}..={to}) to {}",
                    path.display()
                ),
            );
        }
        Ok(())
    }
}
