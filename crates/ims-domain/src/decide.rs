//! `decide`: the rules of DESIGN.md section 2, as one pure function from state and command to
//! events or a refusal.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::*;
use crate::FileFacts;
use crate::{
    BuildOutcome, Command, CopyOutcome, CopySpec, CopyStatus, CreateImage, CreateSource, DiskKind,
    DomainError, ErrorCode, Event, FileFormat, Image, ImageClass, ImageId, ImageStatus,
    ImageUpdated, Listing, MemberStatus, NewImage, Os, Owner, Price, PublishPublicImage,
    ReceiveCopy, RegionId, SharingPolicy, Source, State, Tenant, TenantId, UpdateImage,
};

/// Who sends a command: the tenant named by the subject, or the platform operator (which is also
/// the identity of the service's own sagas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Operator,
    Tenant(TenantId),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::Tenant(tenant) => write!(f, "tenant {tenant}"),
        }
    }
}

/// Everything `decide` needs from outside: who asks, where, when, and the id a new image gets.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub actor: Actor,
    pub region: RegionId,
    pub now_ms: u64,
    /// The id of an image this command creates, if it creates one (a UUID v7 from the caller).
    pub new_image_id: ImageId,
    /// If set, the command's image must be at exactly this version (`conflict` otherwise).
    pub expected_version: Option<u64>,
    pub policy: &'a SharingPolicy,
}

/// Decides what `command` does to `state`: the events to append, or why it is refused. Pure:
/// the same inputs always give the same answer.
pub fn decide(
    state: &State,
    command: &Command,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let at_ms = context.now_ms;
    match (&context.actor, command.is_operator_command()) {
        (Actor::Tenant(tenant), true) => {
            return Err(DomainError::new(
                ErrorCode::Forbidden,
                format!(
                    "{} is an operator command; tenant {tenant} cannot send it",
                    command.name()
                ),
            ))
        }
        (Actor::Operator, false) if !matches!(command, Command::DeleteImage { .. }) => {
            return Err(DomainError::new(
                ErrorCode::Forbidden,
                format!(
                    "{} is a tenant command; send it on a tenant's subject",
                    command.name()
                ),
            ))
        }
        _ => {}
    }
    match command {
        Command::CreateImage(create) => create_image(state, create, context),
        Command::UpdateImage(update) => update_image(state, update, context),
        Command::DeleteImage { image_id } => {
            let image = owned_image(state, *image_id, context)?;
            if image.protected {
                return Err(DomainError::new(
                    ErrorCode::Protected,
                    format!(
                        "image {image_id} is protected and cannot be deleted; update it with \
                         protected=false first"
                    ),
                ));
            }
            Ok(vec![Event::ImageDeleted {
                image_id: *image_id,
                at_ms,
            }])
        }
        Command::ShareImage { image_id, tenants } => {
            share_image(state, *image_id, tenants, context)
        }
        Command::UnshareImage { image_id, tenants } => {
            let image = owned_image(state, *image_id, context)?;
            if let Some(tenants) = tenants {
                check_share_targets(tenants)?;
            }
            let ending: Vec<TenantId> = match tenants {
                None => image.members.keys().cloned().collect(),
                Some(tenants) => {
                    let unique: BTreeSet<&TenantId> = tenants.iter().collect();
                    unique
                        .into_iter()
                        .filter(|t| image.members.contains_key(*t))
                        .cloned()
                        .collect()
                }
            };
            if ending.is_empty() {
                return Ok(vec![]);
            }
            Ok(vec![Event::ImageUnshared {
                image_id: *image_id,
                tenants: ending,
                at_ms,
            }])
        }
        Command::AcceptShare { image_id } => answer_share(state, *image_id, true, context),
        Command::RejectShare { image_id } => answer_share(state, *image_id, false, context),
        Command::CopyImage {
            image_id,
            target_region,
            name,
        } => {
            let image = owned_image(state, *image_id, context)?;
            require_active(image, "copied")?;
            if let Some(encryption) = &image.encryption {
                return Err(DomainError::new(
                    ErrorCode::EncryptedNotCopyable,
                    format!(
                        "image {image_id} is encrypted with KMS key {:?}, and encrypted images \
                         cannot be copied across regions; copy an unencrypted image",
                        encryption.kms_key_id
                    ),
                ));
            }
            if *target_region == context.region {
                return Err(DomainError::invalid_argument(format!(
                    "target_region {target_region:?} is the image's own region; name another \
                     region to copy to"
                )));
            }
            if let Some(name) = name {
                check_name(name, context.policy)?;
            }
            let Owner::Tenant(owner) = image.owner.clone() else {
                unreachable!("owned_image only returns a tenant's image to a tenant")
            };
            Ok(vec![Event::CopyRequested {
                image_id: *image_id,
                copy_image_id: context.new_image_id,
                target_region: target_region.clone(),
                copy: Box::new(CopySpec {
                    owner,
                    name: name.clone().unwrap_or_else(|| image.name.clone()),
                    disk: image.disk,
                    os: image.os.clone(),
                    min_disk_gb: image.min_disk_gb,
                    tags: image.tags.clone(),
                    description: image.description.clone(),
                }),
                at_ms,
            }])
        }
        Command::ListOnMarketplace {
            image_id,
            publisher,
            price,
        } => list_on_marketplace(state, *image_id, publisher, price, context),
        Command::DelistFromMarketplace { image_id } => {
            let image = owned_image(state, *image_id, context)?;
            if image.class != ImageClass::Marketplace {
                return Err(DomainError::invalid_state(format!(
                    "image {image_id} is not listed on the Marketplace; only a listed image can \
                     be delisted"
                )));
            }
            Ok(vec![Event::DelistedFromMarketplace {
                image_id: *image_id,
                at_ms,
            }])
        }
        Command::RegisterTenant { tenant, quota } => {
            if state.tenants.contains_key(tenant) {
                return Err(DomainError::invalid_state(format!(
                    "tenant {tenant} is already registered in region {}; use set-quota to change \
                     its quota",
                    context.region
                )));
            }
            let quota = quota.unwrap_or(context.policy.quota_default);
            check_quota(quota, context.policy)?;
            Ok(vec![Event::TenantRegistered {
                tenant: tenant.clone(),
                quota,
            }])
        }
        Command::SetQuota { tenant, quota } => {
            registered(state, tenant, context)?;
            check_quota(*quota, context.policy)?;
            Ok(vec![Event::QuotaSet {
                tenant: tenant.clone(),
                quota: *quota,
            }])
        }
        Command::PublishPublicImage(publish) => publish_public_image(publish, context),
        Command::DeprecateImage {
            image_id,
            deprecated,
        } => {
            let image = live_image(state, *image_id, context)?;
            if image.class != ImageClass::Public {
                return Err(DomainError::new(
                    ErrorCode::InvalidState,
                    format!("image {image_id} is not public; only public images are deprecated"),
                ));
            }
            Ok(vec![Event::ImageDeprecated {
                image_id: *image_id,
                deprecated: *deprecated,
                at_ms,
            }])
        }
        Command::ReportBuild {
            image_id,
            outcome,
            checksum_sha256,
            file,
            reason,
        } => report_build(
            state,
            *image_id,
            *outcome,
            BuildFacts {
                checksum_sha256: checksum_sha256.as_deref(),
                file: file.as_ref(),
                reason: reason.as_deref(),
            },
            context,
        ),
        Command::RecordUsage {
            image_id,
            tenant,
            hours,
        } => record_usage(state, *image_id, tenant, *hours, context),
        Command::ReceiveCopy(copy) => receive_copy(state, copy, context),
        Command::RecordCopyOutcome {
            image_id,
            copy_image_id,
            outcome,
        } => {
            let image = state
                .images
                .get(image_id)
                .ok_or_else(|| not_found(*image_id, context))?;
            let Some(record) = image
                .copies
                .iter()
                .find(|c| c.copy_image_id == *copy_image_id)
            else {
                return Err(DomainError::new(
                    ErrorCode::NotFound,
                    format!("image {image_id} has no copy request for copy {copy_image_id}"),
                ));
            };
            if record.status != CopyStatus::Requested {
                return Ok(vec![]); // Already recorded: a saga redelivery, nothing to add.
            }
            let status = match outcome {
                CopyOutcome::Delivered => CopyStatus::Delivered,
                CopyOutcome::Failed { reason } => {
                    check_text("outcome.reason", reason, FAILURE_REASON_CHARS_MAX)?;
                    CopyStatus::Failed {
                        reason: reason.clone(),
                    }
                }
            };
            Ok(vec![Event::CopyFinished {
                image_id: *image_id,
                copy_image_id: *copy_image_id,
                status,
                at_ms,
            }])
        }
    }
}

fn create_image(
    state: &State,
    create: &CreateImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let Actor::Tenant(owner) = &context.actor else {
        unreachable!("checked by decide")
    };
    let tenant = registered(state, owner, context)?;
    check_name(&create.name, context.policy)?;
    check_os(create.disk, create.os.as_ref())?;
    check_min_disk(create.min_disk_gb, context.policy)?;
    check_tags(&create.tags, context.policy)?;
    check_description(&create.description, context.policy)?;
    let source = match &create.source {
        CreateSource::Ecs {
            instance_id,
            data_disk_ids,
        } => {
            check_ascii_id("source.ecs.instance_id", instance_id, INSTANCE_ID_CHARS_MAX)?;
            if data_disk_ids.len() > DATA_DISKS_MAX {
                return Err(DomainError::invalid_argument(format!(
                    "source.ecs.data_disk_ids names {} disks; at most {DATA_DISKS_MAX} are accepted",
                    data_disk_ids.len()
                )));
            }
            for id in data_disk_ids {
                check_ascii_id("source.ecs.data_disk_ids[]", id, DATA_DISK_ID_CHARS_MAX)?;
            }
            Source::Ecs {
                instance_id: instance_id.clone(),
                data_disk_ids: data_disk_ids.clone(),
            }
        }
        CreateSource::Upload { format } => {
            if create.disk == DiskKind::FullEcs {
                return Err(DomainError::invalid_argument(
                    "a full_ecs image is made from an ECS (source.ecs), not from an upload; use \
                     disk \"system\" or \"data\" for an image file",
                ));
            }
            Source::Upload { format: *format }
        }
        CreateSource::File { url, format } => {
            if create.disk == DiskKind::FullEcs {
                return Err(DomainError::invalid_argument(
                    "a full_ecs image is made from an ECS (source.ecs), not from a file; use disk \
                     \"system\" or \"data\" for an image file",
                ));
            }
            check_ascii_id("source.file.url", url, URL_CHARS_MAX)?;
            Source::File {
                url: url.clone(),
                format: *format,
            }
        }
    };
    if let Some(encryption) = &create.encryption {
        check_ascii_id(
            "encryption.kms_key_id",
            &encryption.kms_key_id,
            KMS_KEY_ID_CHARS_MAX,
        )?;
    }
    check_quota_room(tenant, context)?;
    Ok(vec![Event::ImageCreated(Box::new(NewImage {
        id: context.new_image_id,
        region: context.region.clone(),
        owner: Owner::Tenant(owner.clone()),
        name: create.name.clone(),
        class: ImageClass::Private,
        disk: create.disk,
        source,
        os: create.os.clone(),
        min_disk_gb: create.min_disk_gb,
        size_bytes: None,
        checksum_sha256: None,
        encryption: create.encryption.clone(),
        tags: create.tags.clone(),
        description: create.description.clone(),
        protected: create.protected,
        status: ImageStatus::Queued,
        at_ms: context.now_ms,
    }))])
}

fn update_image(
    state: &State,
    update: &UpdateImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    owned_image(state, update.image_id, context)?;
    let policy = context.policy;
    if let Some(name) = &update.name {
        check_name(name, policy)?;
    }
    if let Some(description) = &update.description {
        check_description(description, policy)?;
    }
    if let Some(tags) = &update.tags {
        check_tags(tags, policy)?;
    }
    if let Some(min_disk_gb) = update.min_disk_gb {
        check_min_disk(min_disk_gb, policy)?;
    }
    let nothing = update.name.is_none()
        && update.description.is_none()
        && update.tags.is_none()
        && update.min_disk_gb.is_none()
        && update.protected.is_none();
    if nothing {
        return Err(DomainError::invalid_argument(
            "update-image changes nothing; give at least one of name, description, tags, \
             min_disk_gb, protected",
        ));
    }
    Ok(vec![Event::ImageUpdated(Box::new(ImageUpdated {
        image_id: update.image_id,
        name: update.name.clone(),
        description: update.description.clone(),
        tags: update.tags.clone(),
        min_disk_gb: update.min_disk_gb,
        protected: update.protected,
        at_ms: context.now_ms,
    }))])
}

fn share_image(
    state: &State,
    image_id: ImageId,
    tenants: &[TenantId],
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if tenants.is_empty() {
        return Err(DomainError::invalid_argument(
            "tenants is empty; name at least one tenant id of this region to share with",
        ));
    }
    check_share_targets(tenants)?;
    if image.class != ImageClass::Private {
        let class = if image.class == ImageClass::Marketplace {
            "listed on the Marketplace"
        } else {
            "public"
        };
        return Err(DomainError::new(
            ErrorCode::NotShareable,
            format!("image {image_id} is {class}; only private images can be shared"),
        ));
    }
    require_active(image, "shared")?;
    if let Some(encryption) = &image.encryption {
        return Err(DomainError::new(
            ErrorCode::EncryptedNotShareable,
            format!(
                "image {image_id} is encrypted with KMS key {:?}, and encrypted images cannot be \
                 shared; share an unencrypted image",
                encryption.kms_key_id
            ),
        ));
    }
    if image.disk == DiskKind::FullEcs {
        return Err(DomainError::new(
            ErrorCode::FullEcsNotShareable,
            format!(
                "image {image_id} is a full-ECS image, and full-ECS images cannot be shared; share \
                 a system or data disk image"
            ),
        ));
    }
    if let Some(owner) = image.owner.tenant().filter(|owner| tenants.contains(owner)) {
        return Err(DomainError::invalid_argument(format!(
            "tenant {owner} owns image {image_id}; an image is shared with other tenants only"
        )));
    }
    let unknown: Vec<&str> = tenants
        .iter()
        .filter(|t| !state.tenants.contains_key(*t))
        .map(TenantId::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(DomainError::new(
            ErrorCode::UnknownTenant,
            format!(
                "tenants not registered in region {}: {}; images can be shared within a region \
                 only, with tenants registered there",
                context.region,
                unknown.join(", ")
            ),
        ));
    }
    let mut new_members: Vec<TenantId> = Vec::new();
    for tenant in tenants {
        if !image.members.contains_key(tenant) && !new_members.contains(tenant) {
            new_members.push(tenant.clone());
        }
    }
    let limit = context.policy.members_per_image_max;
    if image.members.len() + new_members.len() > limit {
        return Err(DomainError::new(
            ErrorCode::ShareLimitExceeded,
            format!(
                "image {image_id} has {} members and this would add {}; an image can have at most \
                 {limit} members (pending, accepted and rejected); unshare some first",
                image.members.len(),
                new_members.len()
            ),
        ));
    }
    if new_members.is_empty() {
        return Ok(vec![]); // Every target is already a member: reported back, nothing to record.
    }
    Ok(vec![Event::ImageShared {
        image_id,
        tenants: new_members,
        at_ms: context.now_ms,
    }])
}

fn answer_share(
    state: &State,
    image_id: ImageId,
    accept: bool,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let Actor::Tenant(tenant) = &context.actor else {
        unreachable!("checked by decide")
    };
    let image = live_image(state, image_id, context)?;
    let Some(status) = image.members.get(tenant) else {
        return Err(DomainError::new(
            ErrorCode::NotAMember,
            format!(
                "tenant {tenant} is not a member of image {image_id}; only tenants it is shared \
                 with can accept or reject it"
            ),
        ));
    };
    check_expected_version(image, context)?;
    let at_ms = context.now_ms;
    let tenant = tenant.clone();
    Ok(match (accept, status) {
        (true, MemberStatus::Accepted) | (false, MemberStatus::Rejected) => vec![],
        (true, _) => vec![Event::ShareAccepted {
            image_id,
            tenant,
            at_ms,
        }],
        (false, _) => vec![Event::ShareRejected {
            image_id,
            tenant,
            at_ms,
        }],
    })
}

fn list_on_marketplace(
    state: &State,
    image_id: ImageId,
    publisher: &str,
    price: &Price,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let image = owned_image(state, image_id, context)?;
    if image.class == ImageClass::Public {
        return Err(DomainError::new(
            ErrorCode::NotShareable,
            format!("image {image_id} is public; only private images are listed"),
        ));
    }
    require_active(image, "listed on the Marketplace")?;
    if image.encryption.is_some() {
        return Err(DomainError::new(
            ErrorCode::EncryptedNotShareable,
            format!(
                "image {image_id} is encrypted; encrypted images cannot be listed on the \
                 Marketplace"
            ),
        ));
    }
    if !image.members.is_empty() {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is shared with {} tenants; a Marketplace image has no members, so \
             stop sharing it (unshare-image all) before listing it",
            image.members.len()
        )));
    }
    check_text("publisher", publisher, PUBLISHER_CHARS_MAX)?;
    if publisher.trim().is_empty() {
        return Err(DomainError::invalid_argument(
            "publisher is blank; give the name the Marketplace shows, 1 to 64 characters",
        ));
    }
    if let Price::PerHour {
        amount_minor,
        currency,
    } = price
    {
        if *amount_minor == 0 || *amount_minor > PRICE_MINOR_PER_HOUR_MAX {
            return Err(DomainError::invalid_argument(format!(
                "price.amount_minor {amount_minor} is out of range; a per_hour price is 1 to \
                 {PRICE_MINOR_PER_HOUR_MAX} minor units, or use model \"free\""
            )));
        }
        if !currency.0.iter().all(u8::is_ascii_uppercase) {
            return Err(DomainError::invalid_argument(format!(
                "price.currency {:?} is not an ISO 4217 code; expected three upper-case letters \
                 such as \"USD\"",
                String::from_utf8_lossy(&currency.0)
            )));
        }
    }
    let listing = Listing {
        publisher: publisher.to_owned(),
        price: price.clone(),
    };
    Ok(vec![Event::ListedOnMarketplace {
        image_id,
        listing,
        at_ms: context.now_ms,
    }])
}

fn publish_public_image(
    publish: &PublishPublicImage,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let policy = context.policy;
    check_name(&publish.name, policy)?;
    check_os(publish.disk, publish.os.as_ref())?;
    check_min_disk(publish.min_disk_gb, policy)?;
    check_tags(&publish.tags, policy)?;
    check_description(&publish.description, policy)?;
    check_checksum(&publish.checksum_sha256)?;
    if publish.disk == DiskKind::FullEcs {
        return Err(DomainError::invalid_argument(
            "public images are system or data disk images; disk \"full_ecs\" is not published",
        ));
    }
    Ok(vec![Event::ImageCreated(Box::new(NewImage {
        id: context.new_image_id,
        region: context.region.clone(),
        owner: Owner::Platform,
        name: publish.name.clone(),
        class: ImageClass::Public,
        disk: publish.disk,
        source: Source::Published,
        os: publish.os.clone(),
        min_disk_gb: publish.min_disk_gb,
        size_bytes: Some(publish.size_bytes),
        checksum_sha256: Some(publish.checksum_sha256.clone()),
        encryption: None,
        tags: publish.tags.clone(),
        description: publish.description.clone(),
        protected: false,
        status: ImageStatus::Active,
        at_ms: context.now_ms,
    }))])
}

/// What a build report says besides its outcome.
struct BuildFacts<'a> {
    checksum_sha256: Option<&'a str>,
    file: Option<&'a FileFacts>,
    reason: Option<&'a str>,
}

fn report_build(
    state: &State,
    image_id: ImageId,
    outcome: BuildOutcome,
    facts: BuildFacts,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    let checksum_sha256 = facts.checksum_sha256;
    let image = live_image(state, image_id, context)?;
    let at_ms = context.now_ms;
    let allowed_from: &[ImageStatus] = match outcome {
        BuildOutcome::Started => &[ImageStatus::Queued],
        BuildOutcome::Succeeded { .. } | BuildOutcome::Failed => {
            &[ImageStatus::Queued, ImageStatus::Saving]
        }
    };
    if !allowed_from.contains(&image.status) {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is {}; a build can be reported only for a queued or saving image",
            image.status.as_str()
        )));
    }
    if let (Some(_), false) = (
        facts.file,
        matches!(outcome, BuildOutcome::Succeeded { .. }),
    ) {
        return Err(DomainError::invalid_argument(
            "file facts (os_hash_value, detected_format) come with a succeeded build only",
        ));
    }
    if let (Some(_), false) = (facts.reason, outcome == BuildOutcome::Failed) {
        return Err(DomainError::invalid_argument(
            "a reason comes with a failed build only",
        ));
    }
    let mut events = Vec::with_capacity(2);
    if let Some(file) = facts.file {
        check_sha512(&file.sha512)?;
        events.push(Event::FileVerified {
            image_id,
            file: FileFacts {
                sha512: file.sha512.to_ascii_lowercase(),
                ..file.clone()
            },
            at_ms,
        });
    }
    events.push(match outcome {
        BuildOutcome::Started => Event::BuildStarted { image_id, at_ms },
        BuildOutcome::Failed => match facts.reason {
            None => Event::BuildFailed { image_id, at_ms },
            Some(reason) => {
                check_text("reason", reason, FAILURE_REASON_CHARS_MAX)?;
                Event::BuildFailedBecause {
                    image_id,
                    reason: reason.to_owned(),
                    at_ms,
                }
            }
        },
        BuildOutcome::Succeeded { size_bytes } => {
            let checksum = checksum_sha256.ok_or_else(|| {
                DomainError::invalid_argument(
                    "checksum_sha256 is missing; a succeeded build reports the image's SHA-256 \
                     as 64 hex digits",
                )
            })?;
            check_checksum(checksum)?;
            if size_bytes == 0 {
                return Err(DomainError::invalid_argument(
                    "size_bytes is 0; a succeeded build reports the image's size in bytes",
                ));
            }
            Event::BuildSucceeded {
                image_id,
                size_bytes,
                checksum_sha256: checksum.to_ascii_lowercase(),
                at_ms,
            }
        }
    });
    Ok(events)
}

fn check_sha512(digest: &str) -> Result<(), DomainError> {
    if digest.len() != 128 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DomainError::invalid_argument(format!(
            "os_hash_value {} is not a SHA-512 digest; expected 128 hex digits",
            preview(digest)
        )));
    }
    Ok(())
}

fn record_usage(
    state: &State,
    image_id: ImageId,
    tenant: &TenantId,
    hours: u32,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    registered(state, tenant, context)?;
    let image = live_image(state, image_id, context)?;
    let Some(listing) = image
        .listing
        .as_ref()
        .filter(|_| image.class == ImageClass::Marketplace)
    else {
        return Err(DomainError::invalid_state(format!(
            "image {image_id} is not listed on the Marketplace; usage is recorded for \
             Marketplace images only"
        )));
    };
    if hours == 0 || hours > USAGE_HOURS_MAX {
        return Err(DomainError::invalid_argument(format!(
            "hours {hours} is out of range; one usage record holds 1 to {USAGE_HOURS_MAX} hours"
        )));
    }
    let (charge_minor, currency) = match &listing.price {
        Price::Free => (0, None),
        Price::PerHour {
            amount_minor,
            currency,
        } => {
            let charge = amount_minor.checked_mul(u64::from(hours)).ok_or_else(|| {
                DomainError::invalid_argument(format!(
                    "{hours} hours at {amount_minor} minor units an hour is more than a charge \
                     can hold"
                ))
            })?;
            let total = state
                .tenants
                .get(tenant)
                .and_then(|t| t.charges_minor.get(currency.as_str()))
                .copied()
                .unwrap_or(0);
            if total.checked_add(charge).is_none() {
                return Err(DomainError::invalid_argument(format!(
                    "tenant {tenant}'s {} total is {total} minor units; {charge} more would \
                     exceed what a total can hold ({}); settle the ledger first",
                    currency.as_str(),
                    u64::MAX
                )));
            }
            (charge, Some(currency.as_str().to_owned()))
        }
    };
    Ok(vec![Event::UsageRecorded {
        tenant: tenant.clone(),
        image_id,
        hours,
        charge_minor,
        currency,
        at_ms: context.now_ms,
    }])
}

fn receive_copy(
    state: &State,
    copy: &ReceiveCopy,
    context: &Context,
) -> Result<Vec<Event>, DomainError> {
    if state.images.contains_key(&copy.copy_image_id) {
        return Err(DomainError::invalid_state(format!(
            "image {} already exists in region {}; a copy is received once",
            copy.copy_image_id, context.region
        )));
    }
    if copy.source_region == context.region {
        return Err(DomainError::invalid_argument(format!(
            "source_region {} is this region; a copy comes from another region",
            copy.source_region
        )));
    }
    let tenant = state.tenants.get(&copy.owner).ok_or_else(|| {
        DomainError::new(
            ErrorCode::UnknownTenant,
            format!(
                "tenant {} is not registered in region {}; register it there before copying \
                 images to it",
                copy.owner, context.region
            ),
        )
    })?;
    check_name(&copy.name, context.policy)?;
    check_quota_room(tenant, context)?;
    Ok(vec![Event::ImageCreated(Box::new(NewImage {
        id: copy.copy_image_id,
        region: context.region.clone(),
        owner: Owner::Tenant(copy.owner.clone()),
        name: copy.name.clone(),
        class: ImageClass::Private,
        disk: copy.disk,
        source: Source::Copy {
            region: copy.source_region.clone(),
            image_id: copy.source_image_id,
        },
        os: copy.os.clone(),
        min_disk_gb: copy.min_disk_gb,
        size_bytes: None,
        checksum_sha256: None,
        encryption: None,
        tags: copy.tags.clone(),
        description: copy.description.clone(),
        protected: false,
        // The bits are in transfer: the copy is usable once the transfer reports success.
        status: ImageStatus::Saving,
        at_ms: context.now_ms,
    }))])
}

// --- shared checks ---------------------------------------------------------------------------

fn not_found(image_id: ImageId, context: &Context) -> DomainError {
    DomainError::new(
        ErrorCode::NotFound,
        format!(
            "image {image_id} does not exist in region {}",
            context.region
        ),
    )
}

/// The image, if it exists and is not deleted, at the expected version if one was given.
fn live_image<'s>(
    state: &'s State,
    image_id: ImageId,
    context: &Context,
) -> Result<&'s Image, DomainError> {
    let image = state
        .images
        .get(&image_id)
        .ok_or_else(|| not_found(image_id, context))?;
    if image.status == ImageStatus::Deleted {
        return Err(DomainError::new(
            ErrorCode::NotFound,
            format!("image {image_id} was deleted in region {}", context.region),
        ));
    }
    Ok(image)
}

/// The image, if the actor may change it (rule 1): a tenant its own, the operator public ones.
fn owned_image<'s>(
    state: &'s State,
    image_id: ImageId,
    context: &Context,
) -> Result<&'s Image, DomainError> {
    let image = live_image(state, image_id, context)?;
    let may_change = match (&context.actor, &image.owner) {
        (Actor::Tenant(tenant), _) => image.is_owned_by(tenant),
        (Actor::Operator, owner) => *owner == Owner::Platform,
    };
    if !may_change {
        return Err(DomainError::new(
            ErrorCode::Forbidden,
            format!(
                "{} does not own image {image_id}; only its owner can change, delete, share, \
                 copy or list it",
                context.actor
            ),
        ));
    }
    check_expected_version(image, context)?;
    Ok(image)
}

fn check_expected_version(image: &Image, context: &Context) -> Result<(), DomainError> {
    match context.expected_version {
        Some(expected) if expected != image.version => Err(DomainError::new(
            ErrorCode::Conflict,
            format!(
                "image {} is at version {}, not the expected_version {expected}; read it again \
                 and retry with version {}",
                image.id, image.version, image.version
            ),
        )),
        _ => Ok(()),
    }
}

fn require_active(image: &Image, verb: &str) -> Result<(), DomainError> {
    if image.status != ImageStatus::Active {
        return Err(DomainError::invalid_state(format!(
            "image {} is {}; only an active image can be {verb}",
            image.id,
            image.status.as_str()
        )));
    }
    Ok(())
}

fn registered<'s>(
    state: &'s State,
    tenant: &TenantId,
    context: &Context,
) -> Result<&'s Tenant, DomainError> {
    state.tenants.get(tenant).ok_or_else(|| {
        DomainError::new(
            ErrorCode::UnknownTenant,
            format!(
                "tenant {tenant} is not registered in region {}; an operator registers tenants \
                 with register-tenant",
                context.region
            ),
        )
    })
}

fn check_quota_room(tenant: &Tenant, context: &Context) -> Result<(), DomainError> {
    if tenant.owned_private_images >= tenant.quota {
        return Err(DomainError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "tenant {} owns {} private images in region {} and its quota is {}; delete an \
                 image or ask the operator to raise the quota",
                tenant.id, tenant.owned_private_images, context.region, tenant.quota
            ),
        ));
    }
    Ok(())
}

fn check_quota(quota: u32, policy: &SharingPolicy) -> Result<(), DomainError> {
    if quota > policy.quota_max {
        return Err(DomainError::invalid_argument(format!(
            "quota {quota} is too large; expected 0 to {}",
            policy.quota_max
        )));
    }
    Ok(())
}

/// Names: 1..=128 letters, digits, space, `.`, `_`, `-`, not starting or ending with a space.
pub(crate) fn check_name(name: &str, policy: &SharingPolicy) -> Result<(), DomainError> {
    let chars = name.chars().count();
    let allowed = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
    if chars == 0
        || chars > policy.name_chars_max
        || !allowed
        || name.starts_with(' ')
        || name.ends_with(' ')
    {
        return Err(DomainError::invalid_argument(format!(
            "invalid image name {name:?}: expected 1 to {} letters, digits, spaces, '.', '_' or \
             '-', not starting or ending with a space",
            policy.name_chars_max
        )));
    }
    Ok(())
}

fn check_os(disk: DiskKind, os: Option<&Os>) -> Result<(), DomainError> {
    match (disk, os) {
        (DiskKind::Data, Some(_)) => Err(DomainError::invalid_argument(
            "a data disk image has no os; leave os out for disk \"data\"",
        )),
        (DiskKind::System | DiskKind::FullEcs, None) => Err(DomainError::invalid_argument(
            "os is missing; system and full_ecs images need os {platform, version, arch}",
        )),
        (_, Some(os)) => {
            check_text("os.platform", &os.platform, OS_FIELD_CHARS_MAX)?;
            check_text("os.version", &os.version, OS_FIELD_CHARS_MAX)?;
            check_text("os.arch", &os.arch, OS_FIELD_CHARS_MAX)?;
            if [&os.platform, &os.version, &os.arch]
                .iter()
                .any(|f| f.trim().is_empty())
            {
                return Err(DomainError::invalid_argument(format!(
                    "os {{platform: {:?}, version: {:?}, arch: {:?}}} has an empty field; all \
                     three are required",
                    os.platform, os.version, os.arch
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The tenants one share or unshare may name.
fn check_share_targets(tenants: &[TenantId]) -> Result<(), DomainError> {
    if tenants.len() > SHARE_TARGETS_MAX {
        return Err(DomainError::invalid_argument(format!(
            "tenants names {} tenants; at most {SHARE_TARGETS_MAX} are accepted at once, as many \
             as an image may have members",
            tenants.len()
        )));
    }
    Ok(())
}

/// A value shown in a message: whole when short, else its start, so that a refusal of a 60 KB
/// field names it without repeating it.
fn preview(value: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    if value.chars().count() <= SHOWN_CHARS {
        format!("{value:?}")
    } else {
        let start: String = value.chars().take(SHOWN_CHARS).collect();
        format!("{start:?}…")
    }
}

/// Free text of at most `max_chars` characters.
fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), DomainError> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(DomainError::invalid_argument(format!(
            "{field} {} is {chars} characters; at most {max_chars} are accepted",
            preview(value)
        )));
    }
    Ok(())
}

/// An identifier or URL: 1 to `max_chars` printable ASCII characters.
fn check_ascii_id(field: &str, value: &str, max_chars: usize) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > max_chars || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid_argument(format!(
            "{field} {} is not valid; expected 1 to {max_chars} printable ASCII characters \
             without spaces ({} given)",
            preview(value),
            value.chars().count()
        )));
    }
    Ok(())
}

fn check_min_disk(min_disk_gb: u32, policy: &SharingPolicy) -> Result<(), DomainError> {
    if min_disk_gb == 0 || min_disk_gb > policy.min_disk_gb_max {
        return Err(DomainError::invalid_argument(format!(
            "min_disk_gb {min_disk_gb} is out of range; expected 1 to {}",
            policy.min_disk_gb_max
        )));
    }
    Ok(())
}

fn check_tags(tags: &BTreeMap<String, String>, policy: &SharingPolicy) -> Result<(), DomainError> {
    if tags.len() > policy.tags_max {
        return Err(DomainError::invalid_argument(format!(
            "{} tags given; an image has at most {} tags",
            tags.len(),
            policy.tags_max
        )));
    }
    for (key, value) in tags {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > policy.tag_key_chars_max {
            return Err(DomainError::invalid_argument(format!(
                "tag key {key:?} must be 1 to {} characters",
                policy.tag_key_chars_max
            )));
        }
        if value.chars().count() > policy.tag_value_chars_max {
            return Err(DomainError::invalid_argument(format!(
                "value of tag {key:?} ({value:?}) is longer than {} characters",
                policy.tag_value_chars_max
            )));
        }
    }
    Ok(())
}

fn check_description(description: &str, policy: &SharingPolicy) -> Result<(), DomainError> {
    if description.chars().count() > policy.description_chars_max {
        return Err(DomainError::invalid_argument(format!(
            "description is {} characters; at most {} are accepted",
            description.chars().count(),
            policy.description_chars_max
        )));
    }
    Ok(())
}

fn check_checksum(checksum: &str) -> Result<(), DomainError> {
    if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DomainError::invalid_argument(format!(
            "checksum_sha256 {checksum:?} is not a SHA-256 digest; expected 64 hex digits"
        )));
    }
    Ok(())
}

/// Parses a file format name as accepted on the wire.
pub fn parse_file_format(value: &str) -> Result<FileFormat, DomainError> {
    FileFormat::ALL
        .into_iter()
        .find(|f| f.as_str() == value)
        .ok_or_else(|| {
            let names: Vec<&str> = FileFormat::ALL.iter().map(|f| f.as_str()).collect();
            DomainError::invalid_argument(format!(
                "unknown file format {value:?}; expected one of {}",
                names.join(", ")
            ))
        })
}
