//! The JSON requests imsctl sends, built from the parsed command line.

use serde_json::{json, Map, Value};

use super::args::*;

pub(crate) fn query_request(query: ImagesQuery) -> (&'static str, Value) {
    let mut body = Map::new();
    let mut set = |key: &str, value: Value| {
        if !value.is_null() {
            body.insert(key.to_owned(), value);
        }
    };
    let name = match query {
        ImagesQuery::List {
            image_type,
            status,
            platform,
            tag,
            name,
            include_deprecated,
            limit,
            marker,
        } => {
            set("type", json!(image_type));
            set("status", json!(status));
            set("platform", json!(platform));
            set("tag", json!(tag));
            set("name", json!(name));
            set("include_deprecated", json!(include_deprecated));
            set("limit", json!(limit));
            set("marker", json!(marker));
            "visible-images"
        }
        ImagesQuery::SharedWithMe { status } => {
            set("status", json!(status));
            "shared-with-me"
        }
        ImagesQuery::Show { image_id } => {
            set("image_id", json!(image_id));
            "image"
        }
        ImagesQuery::Members { image_id } => {
            set("image_id", json!(image_id));
            "members"
        }
        ImagesQuery::ShareCounts => "share-counts",
        ImagesQuery::Usable { image_id, purpose } => {
            set("image_id", json!(image_id));
            set("purpose", json!(purpose));
            "usable"
        }
        ImagesQuery::Feed { after } => {
            set("after", json!(after));
            "feed"
        }
        ImagesQuery::Usage => "usage",
    };
    (name, Value::Object(body))
}

pub(crate) fn tags_json(tags: &[(String, String)]) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

pub(crate) fn image_body(image: &ImageRef, extra: Value) -> Value {
    let mut body = json!({"image_id": image.image_id});
    if let Some(version) = image.expected_version {
        body["expected_version"] = json!(version);
    }
    merge(body, extra)
}

pub(crate) fn merge(mut body: Value, extra: Value) -> Value {
    if let (Some(target), Value::Object(extra)) = (body.as_object_mut(), extra) {
        target.extend(extra);
    }
    body
}

/// The subject's command name and JSON body of a tenant command.
pub(crate) fn tenant_request(command: ImageCommand) -> (&'static str, Value) {
    match command {
        ImageCommand::Create(args) => ("create-image", create_body(args)),
        ImageCommand::Update {
            image,
            name,
            description,
            tags,
            min_disk_gb,
            protected,
        } => {
            let mut extra = Map::new();
            if let Some(name) = name {
                extra.insert("name".into(), json!(name));
            }
            if let Some(description) = description {
                extra.insert("description".into(), json!(description));
            }
            if !tags.is_empty() {
                extra.insert("tags".into(), tags_json(&tags));
            }
            if let Some(min_disk_gb) = min_disk_gb {
                extra.insert("min_disk_gb".into(), json!(min_disk_gb));
            }
            if let Some(protected) = protected {
                extra.insert("protected".into(), json!(protected));
            }
            ("update-image", image_body(&image, Value::Object(extra)))
        }
        ImageCommand::Delete(image) => ("delete-image", image_body(&image, json!({}))),
        ImageCommand::Share { image, tenants } => (
            "share-image",
            image_body(&image, json!({"tenants": tenants})),
        ),
        ImageCommand::Unshare {
            image,
            tenants,
            all,
        } => {
            let extra = if all {
                json!({"all": true})
            } else {
                json!({"tenants": tenants})
            };
            ("unshare-image", image_body(&image, extra))
        }
        ImageCommand::Accept(image) => ("accept-share", image_body(&image, json!({}))),
        ImageCommand::Reject(image) => ("reject-share", image_body(&image, json!({}))),
        ImageCommand::Copy {
            image,
            target_region,
            name,
        } => {
            let mut extra = json!({"target_region": target_region});
            if let Some(name) = name {
                extra["name"] = json!(name);
            }
            ("copy-image", image_body(&image, extra))
        }
        ImageCommand::ListOnMarketplace {
            image,
            publisher,
            price,
        } => (
            "list-on-marketplace",
            image_body(&image, json!({"publisher": publisher, "price": price})),
        ),
        ImageCommand::Delist(image) => ("delist-from-marketplace", image_body(&image, json!({}))),
    }
}

pub(crate) fn operator_request(command: CatalogOpCommand) -> (&'static str, Value) {
    match command {
        CatalogOpCommand::RegisterTenant { tenant, quota } => {
            let mut body = json!({"tenant": tenant});
            if let Some(quota) = quota {
                body["quota"] = json!(quota);
            }
            ("register-tenant", body)
        }
        CatalogOpCommand::SetQuota { tenant, quota } => {
            ("set-quota", json!({"tenant": tenant, "quota": quota}))
        }
        CatalogOpCommand::PublishPublicImage {
            name,
            disk,
            os,
            min_disk_gb,
            size_bytes,
            checksum_sha256,
            tags,
            description,
        } => {
            let mut body = json!({"name": name, "disk": disk, "min_disk_gb": min_disk_gb, "size_bytes": size_bytes,
                "checksum_sha256": checksum_sha256, "tags": tags_json(&tags), "description": description});
            if let Some(os) = os {
                body["os"] = os;
            }
            ("publish-public-image", body)
        }
        CatalogOpCommand::DeprecateImage { image_id, undo } => (
            "deprecate-image",
            json!({"image_id": image_id, "deprecated": !undo}),
        ),
        CatalogOpCommand::DeleteImage { image_id } => {
            ("delete-image", json!({"image_id": image_id}))
        }
        CatalogOpCommand::ReportBuild {
            image_id,
            outcome,
            size_bytes,
            checksum_sha256,
        } => {
            let mut body = json!({"image_id": image_id, "outcome": outcome});
            if let Some(size) = size_bytes {
                body["size_bytes"] = json!(size);
            }
            if let Some(checksum) = checksum_sha256 {
                body["checksum_sha256"] = json!(checksum);
            }
            ("report-build", body)
        }
        CatalogOpCommand::RecordUsage {
            image_id,
            tenant,
            hours,
        } => (
            "record-usage",
            json!({"image_id": image_id, "tenant": tenant, "hours": hours}),
        ),
    }
}

/// The `create-image` request: clap has made sure exactly one source is given.
fn create_body(args: CreateArgs) -> Value {
    let source = match (args.from_ecs, args.from_file) {
        (Some(instance_id), _) => {
            json!({"ecs": {"instance_id": instance_id, "data_disk_ids": args.data_disks}})
        }
        (None, Some(url)) => {
            json!({"file": {"url": url, "format": args.format.unwrap_or_else(|| "qcow2".into())}})
        }
        // clap requires one of the two; an empty ECS id is refused by the service if not.
        (None, None) => json!({"ecs": {"instance_id": "", "data_disk_ids": args.data_disks}}),
    };
    let mut body = json!({"name": args.name, "disk": args.disk, "source": source, "min_disk_gb": args.min_disk_gb,
        "tags": tags_json(&args.tags), "description": args.description, "protected": args.protected});
    if let Some(os) = args.os {
        body["os"] = os;
    }
    if let Some(key) = args.kms_key_id {
        body["encryption"] = json!({"kms_key_id": key});
    }
    body
}
