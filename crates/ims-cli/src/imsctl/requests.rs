//! The requests imsctl sends, built from the parsed command line as the typed bodies of
//! `ims_wire`: nothing here writes JSON by hand.

use ims_wire::commands::*;
use ims_wire::{Query, QueryParams};
use uuid::Uuid;

use super::args::*;

/// A command ready to send: its name (the subject's last token) and its JSON payload.
pub(crate) type Outgoing = (&'static str, Vec<u8>);

fn outgoing<T: CommandBody>(body: &T, command_id: Uuid, expected_version: Option<u64>) -> Outgoing {
    (
        T::NAME,
        command_payload(body, Some(command_id), expected_version),
    )
}

pub(crate) fn query_request(query: ImagesQuery) -> (Query, QueryParams) {
    let mut params = QueryParams::default();
    let query = match query {
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
            params.image_type = image_type;
            params.status = status;
            params.platform = platform;
            params.tag = tag;
            params.name = name;
            params.include_deprecated = Some(include_deprecated);
            params.limit = Some(limit);
            params.marker = marker;
            Query::VisibleImages
        }
        ImagesQuery::SharedWithMe { status } => {
            params.status = status;
            Query::SharedWithMe
        }
        ImagesQuery::Show { image_id } => {
            params.image_id = Some(image_id);
            Query::Image
        }
        ImagesQuery::Members { image_id } => {
            params.image_id = Some(image_id);
            Query::Members
        }
        ImagesQuery::ShareCounts => Query::ShareCounts,
        ImagesQuery::Usable { image_id, purpose } => {
            params.image_id = Some(image_id);
            params.purpose = Some(purpose);
            Query::Usable
        }
        ImagesQuery::Feed { after } => {
            params.after = after;
            Query::Feed
        }
        ImagesQuery::Usage => Query::Usage,
        ImagesQuery::Unused { days } => {
            params.days = Some(days);
            Query::UnusedImages
        }
        ImagesQuery::RecycleBin => Query::RecycleBin,
        ImagesQuery::Latest { family } => {
            params.family = Some(family);
            Query::Latest
        }
    };
    (query, params)
}

/// A command about one image, with the version it must be at when one is given.
fn about_image<T: CommandBody>(
    image: ImageRef,
    id: Uuid,
    body: impl FnOnce(String) -> T,
) -> Outgoing {
    outgoing(&body(image.image_id), id, image.expected_version)
}

/// A tenant command.
pub(crate) fn tenant_request(command: ImageCommand, id: Uuid) -> Outgoing {
    match command {
        ImageCommand::Create(args) => outgoing(&create_body(args), id, None),
        ImageCommand::Update {
            image,
            name,
            description,
            tags,
            min_disk_gb,
            protected,
            family,
            exclude_from_latest,
        } => about_image(image, id, |image_id| UpdateImageRequest {
            image_id,
            name,
            description,
            tags: (!tags.is_empty()).then(|| tags.into_iter().collect()),
            min_disk_gb,
            protected,
            family,
            exclude_from_latest,
        }),
        ImageCommand::Deprecate { image, deprecation } => {
            about_image(image, id, |image_id| deprecation.request(image_id))
        }
        ImageCommand::Restore(image) => {
            about_image(image, id, |image_id| RestoreImageRequest { image_id })
        }
        ImageCommand::Delete(image) => {
            about_image(image, id, |image_id| DeleteImageRequest { image_id })
        }
        ImageCommand::Share {
            image,
            tenants,
            organizations,
        } => about_image(image, id, |image_id| ShareImageRequest {
            image_id,
            tenants,
            organizations,
        }),
        ImageCommand::Unshare {
            image,
            tenants,
            organizations,
            all,
        } => about_image(image, id, |image_id| UnshareImageRequest {
            image_id,
            tenants: (!all && !tenants.is_empty()).then_some(tenants),
            all,
            organizations,
        }),
        ImageCommand::Accept(image) => {
            about_image(image, id, |image_id| AcceptShareRequest { image_id })
        }
        ImageCommand::Reject(image) => {
            about_image(image, id, |image_id| RejectShareRequest { image_id })
        }
        ImageCommand::Copy {
            image,
            target_region,
            name,
        } => about_image(image, id, |image_id| CopyImageRequest {
            image_id,
            target_region,
            name,
        }),
        ImageCommand::ListOnMarketplace {
            image,
            publisher,
            price,
        } => about_image(image, id, |image_id| ListOnMarketplaceRequest {
            image_id,
            publisher,
            price,
        }),
        ImageCommand::Delist(image) => about_image(image, id, |image_id| {
            DelistFromMarketplaceRequest { image_id }
        }),
    }
}

/// An operator command of a region's catalog.
pub(crate) fn operator_request(command: CatalogOpCommand, id: Uuid) -> Outgoing {
    match command {
        CatalogOpCommand::RegisterTenant {
            tenant,
            quota,
            organization,
        } => outgoing(
            &RegisterTenantRequest {
                tenant,
                quota,
                organization,
            },
            id,
            None,
        ),
        CatalogOpCommand::SetQuota { tenant, quota } => {
            outgoing(&SetQuotaRequest { tenant, quota }, id, None)
        }
        CatalogOpCommand::SetRetention { tenant, days } => {
            outgoing(&SetRetentionRequest { tenant, days }, id, None)
        }
        CatalogOpCommand::PublishPublicImage(args) => outgoing(&publish_body(args), id, None),
        CatalogOpCommand::DeprecateImage {
            image_id,
            deprecation,
        } => outgoing(&deprecation.request(image_id), id, None),
        CatalogOpCommand::DeleteImage { image_id } => {
            outgoing(&DeleteImageRequest { image_id }, id, None)
        }
        CatalogOpCommand::ReportBuild {
            image_id,
            outcome,
            size_bytes,
            checksum_sha256,
        } => {
            let body = ReportBuildRequest {
                image_id,
                outcome: outcome.into(),
                size_bytes,
                checksum_sha256,
                os_hash_algo: None,
                os_hash_value: None,
                detected_format: None,
                virtual_size: None,
                reason: None,
            };
            outgoing(&body, id, None)
        }
        CatalogOpCommand::RecordUsage {
            image_id,
            tenant,
            hours,
        } => outgoing(
            &RecordUsageRequest {
                image_id,
                tenant,
                hours,
            },
            id,
            None,
        ),
        CatalogOpCommand::RecordLaunch { image_id, tenant } => {
            outgoing(&RecordLaunchRequest { image_id, tenant }, id, None)
        }
    }
}

/// The `publish-public-image` request.
fn publish_body(args: PublishArgs) -> PublishPublicImageRequest {
    PublishPublicImageRequest {
        name: args.name,
        disk: args.disk.into(),
        os: args.os,
        min_disk_gb: args.min_disk_gb,
        size_bytes: args.size_bytes,
        checksum_sha256: args.checksum_sha256,
        tags: args.tags.into_iter().collect(),
        description: args.description,
        family: args.family,
    }
}

/// The `create-image` request: clap has made sure exactly one source is given.
fn create_body(args: CreateArgs) -> CreateImageRequest {
    let source = match (args.from_ecs, args.from_file) {
        (Some(instance_id), _) => SourceDto::Ecs {
            instance_id,
            data_disk_ids: args.data_disks,
        },
        (None, Some(url)) => SourceDto::File {
            url,
            format: args.format.map_or("qcow2", Format::as_str).to_owned(),
        },
        // clap requires one of the two; an empty ECS id is refused by the service if not.
        (None, None) => SourceDto::Ecs {
            instance_id: String::new(),
            data_disk_ids: args.data_disks,
        },
    };
    CreateImageRequest {
        name: args.name,
        disk: args.disk.into(),
        source,
        os: args.os,
        min_disk_gb: args.min_disk_gb,
        encryption: args
            .kms_key_id
            .map(|kms_key_id| EncryptionDto { kms_key_id }),
        tags: args.tags.into_iter().collect(),
        description: args.description,
        protected: args.protected,
        family: args.family.family,
        exclude_from_latest: args.family.exclude_from_latest,
    }
}

/// The `create-image` request of `imsctl image import`: an upload, or a URL the service
/// downloads.
pub(crate) fn import_body(args: &ImportArgs) -> CreateImageRequest {
    let format = args.format.as_str().to_owned();
    let source = match &args.url {
        Some(url) => SourceDto::File {
            url: url.clone(),
            format,
        },
        None => SourceDto::Upload { format },
    };
    CreateImageRequest {
        name: args.name.clone(),
        disk: args.disk.into(),
        source,
        os: args.os.clone(),
        min_disk_gb: args.min_disk_gb,
        encryption: None,
        tags: args.tags.iter().cloned().collect(),
        description: args.description.clone(),
        protected: false,
        family: args.family.family.clone(),
        exclude_from_latest: args.family.exclude_from_latest,
    }
}
