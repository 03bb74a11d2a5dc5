//! What imsctl prints: one-line summaries of answers, tables of query results, progress bars.

use ims_wire::Query;
use serde_json::Value;

/// A human rendering of a query answer.
pub(crate) fn render_query(query: Query, answer: &Value) -> String {
    let name = query.as_str();
    if answer["ok"] == false {
        return summarize(name, answer);
    }
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let mut lines: Vec<String> = match query {
        Query::VisibleImages
        | Query::SharedWithMe
        | Query::Members
        | Query::ShareCounts
        | Query::Feed
        | Query::Usage
        | Query::UnusedImages
        | Query::RecycleBin => items.iter().map(|item| item_line(name, item)).collect(),
        Query::Usable => {
            let verdict = if answer["allowed"] == true {
                "allowed"
            } else {
                "refused"
            };
            let mut lines = vec![format!("{verdict}: {}", text(&answer["reason"]))];
            if let Some(warning) = answer["warning"].as_str() {
                lines.push(format!("warning: {warning}"));
            }
            lines
        }
        Query::Image | Query::Latest => {
            vec![serde_json::to_string_pretty(answer).unwrap_or_default()]
        }
    };
    if query == Query::Usage {
        lines.push(format!("totals (minor units): {}", answer["totals_minor"]));
    }
    if let Some(marker) = answer["next_marker"].as_str() {
        lines.push(format!("more: --marker {marker}"));
    }
    if lines.is_empty() {
        lines.push("(none)".to_owned());
    }
    lines.join("\n")
}

/// A JSON value as text: strings without their quotes.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// One line of a list answer of query `name`.
fn item_line(name: &str, i: &Value) -> String {
    match name {
        "members" => match i["organization"].as_str() {
            Some(organization) => {
                format!("{:<32} {} (organization)", organization, text(&i["status"]))
            }
            None => format!("{:<32} {}", text(&i["tenant"]), text(&i["status"])),
        },
        "share-counts" => format!(
            "{}  {}  pending {} accepted {} rejected {} organizations {} ({} of {})",
            text(&i["image_id"]),
            text(&i["name"]),
            i["pending"],
            i["accepted"],
            i["rejected"],
            i["organizations"],
            i["total"],
            i["limit"]
        ),
        "feed" => format!(
            "#{} {} {:<22} {}",
            i["position"],
            text(&i["at"]),
            text(&i["kind"]),
            text(&i["message"])
        ),
        "usage" => format!(
            "#{} {} image {} {} h charge {} {}",
            i["position"],
            text(&i["at"]),
            text(&i["image_id"]),
            i["hours"],
            i["charge_minor"],
            text(&i["currency"])
        ),
        "recycle-bin" => format!(
            "{}  {:<9} {}  purged at {}",
            text(&i["id"]),
            text(&i["disk"]),
            text(&i["name"]),
            text(&i["purge_at"])
        ),
        "unused-images" => format!(
            "{}  {:<8} {:<9} {}  last launched {}",
            text(&i["id"]),
            text(&i["status"]),
            text(&i["disk"]),
            text(&i["name"]),
            i["last_launched_at"].as_str().unwrap_or("never")
        ),
        // visible-images and shared-with-me
        _ => format!(
            "{}  {:<11} {:<8} {:<9} {}{}{}",
            text(&i["id"]),
            text(&i["type"]),
            text(&i["status"]),
            text(&i["disk"]),
            text(&i["name"]),
            i["member_status"]
                .as_str()
                .map(|s| format!("  [{s}]"))
                .unwrap_or_default(),
            i["deprecation"]["state"]
                .as_str()
                .filter(|state| *state != "active")
                .map(|state| format!("  ({state})"))
                .unwrap_or_default()
        ),
    }
}

pub(crate) fn summarize(name: &str, reply: &Value) -> String {
    if reply["ok"] != true {
        return format!(
            "error [{}]: {}",
            reply["error"]["code"].as_str().unwrap_or("?"),
            reply["error"]["message"].as_str().unwrap_or("")
        );
    }
    let mut line = format!("ok: {name}");
    for (key, label) in [
        ("image_id", "image"),
        ("tenant", "tenant"),
        ("copy_image_id", "copy"),
        ("version", "version"),
        ("position", "position"),
    ] {
        match &reply[key] {
            Value::Null => {}
            Value::String(s) => line.push_str(&format!(" {label} {s}")),
            other => line.push_str(&format!(" {label} {other}")),
        }
    }
    for (key, label) in [
        ("already_members", "already members"),
        ("not_members", "not members"),
    ] {
        if let Some(list) = reply[key].as_array().filter(|l| !l.is_empty()) {
            let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("; {label}: {}", names.join(", ")));
        }
    }
    if reply["replayed"] == true {
        line.push_str(" (replayed: this command id was seen before)");
    }
    line
}

pub(crate) fn progress_bar(total: u64, json: bool, what: &str) -> indicatif::ProgressBar {
    if json || total < 10_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}
