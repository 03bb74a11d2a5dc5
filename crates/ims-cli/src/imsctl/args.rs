//! imsctl's command line: every command, option and value parser, with the help they print.

use clap::{Args, Parser, Subcommand};
use ims_wire::commands::{OsDto, PriceDto};

use super::values::DeprecationStateArg;

pub(crate) use super::values::*;

/// Talk to the ims Image Management Service.
///
/// Examples:
///   imsctl --tenant acme image create --name web-2026 --disk system --from-ecs ecs-42 \
///          --os ubuntu/22.04/x86_64 --min-disk-gb 40 --tag env=prod
///   imsctl --tenant acme image share 0192f0c1-... partner-a partner-b
///   imsctl --tenant partner-a image accept 0192f0c1-...
///   imsctl op register-tenant acme --quota 200
///   imsctl --tenant acme --json images list --type shared
///   imsctl op credential issue tenant acme        # prints acme's token, once
///
/// Credentials: --token, else IMS_TOKEN, else --token-file, else ./data/operator.token (the
/// bootstrap operator token `imsd run` writes) when it exists.
#[derive(Parser, Debug)]
#[command(name = "imsctl", version, verbatim_doc_comment)]
pub(crate) struct Cli {
    /// NATS server of the service [default: the URL `imsd run` left in ./data/nats.url when
    /// it started its own nats-server, else nats://127.0.0.1:4222].
    #[arg(long, env = "IMS_NATS_URL", global = true)]
    pub(crate) nats_url: Option<String>,
    /// Region to talk to.
    #[arg(long, env = "IMS_REGION", default_value = "local-1", global = true)]
    pub(crate) region: String,
    /// Tenant to act as (tenant commands and queries).
    #[arg(long, env = "IMS_TENANT", global = true)]
    pub(crate) tenant: Option<String>,
    /// First token of every NATS subject.
    #[arg(long, env = "IMS_SUBJECT_PREFIX", default_value = "ims", global = true)]
    pub(crate) subject_prefix: String,
    /// Print the service's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The credential to connect with, ims_<key_id>_<secret>.
    #[arg(long, env = "IMS_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A file holding the credential (one line).
    #[arg(long, global = true)]
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// The service's HTTP API, for image files (import, download).
    #[arg(
        long,
        env = "IMS_HTTP_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) http_url: String,
    /// A command id (UUID) for exactly-once retries; generated when absent.
    #[arg(long, global = true, value_parser = parse_command_id)]
    pub(crate) command_id: Option<uuid::Uuid>,
    #[command(subcommand)]
    pub(crate) command: Top,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Top {
    /// Tenant commands on images (needs --tenant).
    #[command(subcommand)]
    Image(ImageTop),
    /// Operator commands.
    #[command(subcommand)]
    Op(OpCommand),
    /// Queries of the read models (needs --tenant).
    #[command(subcommand)]
    Images(ImagesQuery),
    /// History, time travel, verification and export, online or offline (--data-dir).
    Audit(AuditArgs),
}

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Work offline on this data dir (the service must be stopped) instead of over NATS.
    #[arg(long, global = true)]
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// Where the image files are, for `verify` offline: `local` (the data dir's) or
    /// `s3://bucket[/prefix]`, as given to imsd.
    #[arg(long, env = "IMS_STORE", default_value = "local", global = true)]
    pub(crate) store: ims_store::StoreLocation,
    #[command(subcommand)]
    pub(crate) command: AuditCommand,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct Moment {
    /// A time, RFC 3339, such as 2026-11-28T07:00:00Z.
    #[arg(long)]
    pub(crate) at: Option<String>,
    /// A log position.
    #[arg(long)]
    pub(crate) position: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    #[command(flatten)]
    Region(RegionAuditCommand),
    /// Who was granted which credential, by whom and when, and every revocation: the identity
    /// log, its hash chain checked (needs an auditor's credential online).
    Credentials,
}

/// Audits of one region's log.
#[derive(Subcommand, Debug)]
pub(crate) enum RegionAuditCommand {
    /// Every event about an image (--image) and/or a tenant (--tenant), in order.
    History {
        #[arg(long)]
        image: Option<String>,
    },
    /// Answer a query as it was at a past time or position (needs --tenant).
    AsOf {
        #[command(flatten)]
        moment: Moment,
        /// The query to answer as of then.
        #[arg(long, value_enum, default_value = "visible-images")]
        query: AsOfQuery,
        /// The image, for members.
        #[arg(long)]
        image: Option<String>,
    },
    /// The tenants that could use an image at a moment, and through what.
    WhoCouldUse {
        #[arg(long)]
        image: String,
        #[command(flatten)]
        moment: Moment,
    },
    /// Check positions, the hash chain from position 1, and every read model against a rebuild.
    Verify,
    /// Export events as JSON Lines (one event a line, hashes included; schema in ARCHITECTURE.md).
    Export {
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position (default: the head).
        #[arg(long)]
        to: Option<u64>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ImagesQuery {
    /// The images the tenant may use: public, its own, accepted shares, Marketplace.
    List {
        /// public, private, shared or marketplace.
        #[arg(long = "type")]
        image_type: Option<String>,
        /// queued, saving, active or killed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        /// key or key=value.
        #[arg(long)]
        tag: Option<String>,
        /// Part of the name, any case.
        #[arg(long)]
        name: Option<String>,
        /// Show deprecated and obsolete images too.
        #[arg(long)]
        include_deprecated: bool,
        #[arg(long, default_value_t = 25)]
        limit: usize,
        /// Start after this image id (the next_marker of the previous page).
        #[arg(long)]
        marker: Option<String>,
    },
    /// Images shared with the tenant and its member status (pending, accepted, rejected).
    SharedWithMe {
        #[arg(long)]
        status: Option<String>,
    },
    /// One image.
    Show { image_id: String },
    /// The members of an image the tenant owns.
    Members { image_id: String },
    /// Per owned image: pending, accepted, rejected members and the limit.
    ShareCounts,
    /// May the tenant use this image for this purpose, and at what price?
    Usable {
        image_id: String,
        /// create_ecs, change_os or create_evs.
        #[arg(long, default_value = "create_ecs")]
        purpose: String,
    },
    /// Notifications: shares offered and revoked, shared images deleted, deprecations.
    Feed {
        /// Only items after this position.
        #[arg(long)]
        after: Option<u64>,
    },
    /// The tenant's Marketplace usage charges.
    Usage,
    /// The tenant's own images nobody launched in `--days` days (never launched included): what
    /// to clean up.
    Unused {
        /// 1 to 3650.
        #[arg(long)]
        days: u32,
    },
    /// The tenant's deleted images, each with when it is purged unless restored.
    RecycleBin,
    /// The newest image of a family that you may use: active, not deprecated, not excluded.
    ///
    /// Example: `imsctl --tenant acme images latest web-server`
    Latest { family: String },
}

#[derive(Args, Debug)]
pub(crate) struct ImageRef {
    /// The image id (a UUID).
    pub(crate) image_id: String,
    /// Refuse with `conflict` unless the image is at this version.
    #[arg(long)]
    pub(crate) expected_version: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ImageTop {
    #[command(flatten)]
    Command(ImageCommand),
    /// One image (the same as `imsctl images show`).
    Show { image_id: String },
    /// Create an image and import its file: --file uploads it from this machine with a progress
    /// bar; --url has the service download it (http or https, ports 80 and 443, public
    /// addresses only) and waits until it is imported. The service hashes and inspects the
    /// bytes: a file that is not what --format says is refused, with why.
    ///
    /// Examples: `imsctl --tenant acme image import --file web.qcow2 --format qcow2 --name web
    /// --disk system --os ubuntu/24.04/x86_64 --min-disk-gb 10`;
    /// `imsctl --tenant acme image import --url https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
    /// --format qcow2 --name noble --disk system --os ubuntu/24.04/x86_64 --min-disk-gb 10`
    Import(ImportArgs),
    /// Download an image's file (yours, or one shared with you and accepted).
    Download {
        image_id: String,
        /// Where to write it.
        #[arg(long)]
        output: std::path::PathBuf,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["file", "url"])))]
pub(crate) struct ImportArgs {
    /// The image file on this machine, uploaded over HTTP (--http-url).
    #[arg(long)]
    pub(crate) file: Option<std::path::PathBuf>,
    /// An http(s) URL the service downloads the image from.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// What the file is.
    #[arg(long, value_enum)]
    pub(crate) format: Format,
    #[arg(long)]
    pub(crate) name: String,
    /// What the image becomes.
    #[arg(long, value_enum)]
    pub(crate) disk: Disk,
    /// platform/version/arch, such as ubuntu/22.04/x86_64 (system images).
    #[arg(long, value_parser = parse_os)]
    pub(crate) os: Option<OsDto>,
    #[arg(long)]
    pub(crate) min_disk_gb: u32,
    /// repeat as --tag key=value.
    #[arg(long = "tag", value_parser = parse_tag)]
    pub(crate) tags: Vec<(String, String)>,
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    #[command(flatten)]
    pub(crate) family: FamilyArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCommand {
    /// Create a private image from an ECS (--from-ecs) or an image file (--from-file): one of
    /// the two is required.
    ///
    /// Example: `imsctl --tenant acme image create --name web --disk system --from-ecs ecs-42
    /// --os ubuntu/22.04/x86_64 --min-disk-gb 40`
    Create(CreateArgs),
    /// Change an image's name, description, tags, minimum disk or protection.
    Update {
        #[command(flatten)]
        image: ImageRef,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Replace all tags; repeat as --tag key=value.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long)]
        min_disk_gb: Option<u32>,
        #[arg(long)]
        protected: Option<bool>,
        /// Join this family; --family "" leaves the family.
        #[arg(long)]
        family: Option<String>,
        /// true: never the answer of `images latest`.
        #[arg(long)]
        exclude_from_latest: Option<bool>,
    },
    /// Delete an image: it goes to the recycle bin (members lose it) until its purge, unless
    /// restored; deleting it there purges it at once.
    Delete(ImageRef),
    /// Take an image out of the recycle bin, with its members as they were.
    Restore(ImageRef),
    /// Share an image with tenants of the same region, or with every tenant of an organization
    /// (present and future, no acceptance needed).
    Share {
        #[command(flatten)]
        image: ImageRef,
        #[arg(required_unless_present = "organizations")]
        tenants: Vec<String>,
        /// Repeatable; each organization counts as one member.
        #[arg(long = "organization")]
        organizations: Vec<String>,
    },
    /// Stop sharing an image with some tenants or organizations, or with everyone (--all).
    Unshare {
        #[command(flatten)]
        image: ImageRef,
        tenants: Vec<String>,
        #[arg(long = "organization")]
        organizations: Vec<String>,
        #[arg(long, conflicts_with_all = ["tenants", "organizations"])]
        all: bool,
    },
    /// Accept an image shared with you.
    Accept(ImageRef),
    /// Reject an image shared with you.
    Reject(ImageRef),
    /// Copy an image to another region where you are a registered tenant.
    Copy {
        #[command(flatten)]
        image: ImageRef,
        /// The target region.
        #[arg(long = "to")]
        target_region: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List an image on the Marketplace.
    ListOnMarketplace {
        #[command(flatten)]
        image: ImageRef,
        #[arg(long)]
        publisher: String,
        /// `free`, or `per_hour:AMOUNT_MINOR:CURRENCY` such as per_hour:120:USD.
        #[arg(long, value_parser = parse_price)]
        price: PriceDto,
    },
    /// Take an image off the Marketplace.
    Delist(ImageRef),
    /// Deprecate an image (hidden from lists, usable with a warning), make it obsolete
    /// (refused), or schedule both, naming its replacement; `--state active` takes it back.
    ///
    /// Example: `imsctl --tenant acme image deprecate IMAGE --replacement NEWER
    /// --obsolete-at 2027-03-01T00:00:00Z --delete-at 2027-06-01T00:00:00Z`
    Deprecate {
        #[command(flatten)]
        image: ImageRef,
        #[command(flatten)]
        deprecation: DeprecateArgs,
    },
}

/// A public image as the operator publishes it.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    #[arg(long)]
    pub(crate) name: String,
    #[arg(long, value_enum, default_value = "system")]
    pub(crate) disk: Disk,
    #[arg(long, value_parser = parse_os)]
    pub(crate) os: Option<OsDto>,
    #[arg(long)]
    pub(crate) min_disk_gb: u32,
    #[arg(long)]
    pub(crate) size_bytes: u64,
    #[arg(long)]
    pub(crate) checksum_sha256: String,
    #[arg(long = "tag", value_parser = parse_tag)]
    pub(crate) tags: Vec<(String, String)>,
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    /// The image family it joins, such as debian-12.
    #[arg(long)]
    pub(crate) family: Option<String>,
}

/// An image's deprecation, set as a whole: what is left out is cleared.
#[derive(Args, Debug)]
pub(crate) struct DeprecateArgs {
    /// deprecated: hidden from lists, still usable with a warning; obsolete: refused; active:
    /// neither.
    #[arg(long, value_enum, default_value = "deprecated")]
    pub(crate) state: DeprecationStateArg,
    /// The image to use instead; every tenant who can see this one must see it.
    #[arg(long)]
    pub(crate) replacement: Option<String>,
    /// When the service makes it obsolete, RFC 3339 such as 2027-03-01T00:00:00Z.
    #[arg(long)]
    pub(crate) obsolete_at: Option<String>,
    /// When the service deletes it, RFC 3339.
    #[arg(long)]
    pub(crate) delete_at: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// The image's name: 1 to 128 letters, digits, spaces, '.', '_' and '-'.
    #[arg(long)]
    pub(crate) name: String,
    /// What the image becomes.
    #[arg(long, value_enum)]
    pub(crate) disk: Disk,
    /// Make the image from this ECS.
    #[arg(
        long,
        conflicts_with = "from_file",
        required_unless_present = "from_file"
    )]
    pub(crate) from_ecs: Option<String>,
    /// Data disks of the ECS to include (full-ECS images); repeatable.
    #[arg(long = "data-disk")]
    pub(crate) data_disks: Vec<String>,
    /// Import the image from this URL: file:///… under the service's import root, or
    /// http(s)://… (downloaded under the web-download rules).
    #[arg(long)]
    pub(crate) from_file: Option<String>,
    /// Format of the file (qcow2 when not given).
    #[arg(long, value_enum, requires = "from_file")]
    pub(crate) format: Option<Format>,
    /// platform/version/arch, such as ubuntu/22.04/x86_64 (system and full_ecs images).
    #[arg(long, value_parser = parse_os)]
    pub(crate) os: Option<OsDto>,
    /// The smallest disk, in GB, that an ECS made from the image needs (1 to 1024).
    #[arg(long)]
    pub(crate) min_disk_gb: u32,
    /// repeat as --tag key=value.
    #[arg(long = "tag", value_parser = parse_tag)]
    pub(crate) tags: Vec<(String, String)>,
    /// Free text, up to 1024 characters.
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    /// Refuse deletes until the image is updated with --protected false.
    #[arg(long)]
    pub(crate) protected: bool,
    /// Encrypt with this KMS key (encrypted images cannot be shared or copied).
    #[arg(long)]
    pub(crate) kms_key_id: Option<String>,
    #[command(flatten)]
    pub(crate) family: FamilyArgs,
}

/// The image family a new image joins.
#[derive(Args, Debug, Clone)]
pub(crate) struct FamilyArgs {
    /// Join this image family: `images latest FAMILY` answers its newest usable image.
    #[arg(long)]
    pub(crate) family: Option<String>,
    /// Never the answer of `images latest` (a release candidate, say).
    #[arg(long, requires = "family")]
    pub(crate) exclude_from_latest: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OpCommand {
    #[command(flatten)]
    Catalog(CatalogOpCommand),
    /// Issue, revoke and list credentials (the identity log records each grant).
    #[command(subcommand)]
    Credential(CredentialCommand),
}

/// Operator commands of a region's catalog.
#[derive(Subcommand, Debug)]
pub(crate) enum CatalogOpCommand {
    /// Register a tenant in the region.
    RegisterTenant {
        tenant: String,
        #[arg(long)]
        quota: Option<u32>,
        /// The organization it belongs to: images shared with the organization reach it.
        #[arg(long)]
        organization: Option<String>,
    },
    /// Set how many private images a tenant may own.
    SetQuota { tenant: String, quota: u32 },
    /// Set how many days (1 to 365) a tenant's deleted images stay in its recycle bin.
    SetRetention { tenant: String, days: u32 },
    /// Publish a public image, active at once for every tenant.
    PublishPublicImage(PublishArgs),
    /// Deprecate a public image, make it obsolete, or schedule either (as `image deprecate`).
    DeprecateImage {
        image_id: String,
        #[command(flatten)]
        deprecation: DeprecateArgs,
    },
    /// Delete a public image.
    DeleteImage { image_id: String },
    /// Report a build: started, succeeded (with size and checksum) or failed.
    ReportBuild {
        image_id: String,
        #[arg(long, value_enum)]
        outcome: Outcome,
        #[arg(long)]
        size_bytes: Option<u64>,
        #[arg(long)]
        checksum_sha256: Option<String>,
    },
    /// Record hours of use of a Marketplace image by a tenant.
    RecordUsage {
        image_id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        hours: u32,
    },
    /// Record that a tenant launched an instance or a disk from an image (what the compute
    /// service reports); sets the image's last_launched_at, at most once an hour.
    RecordLaunch {
        image_id: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CredentialCommand {
    /// Issue a credential and print its token (shown this once; only its digest is kept).
    ///
    /// Examples: `imsctl op credential issue tenant acme`, `imsctl op credential issue auditor`.
    Issue {
        /// What the holder may do.
        #[arg(value_enum)]
        role: Role,
        /// The tenant a `tenant` credential acts as.
        #[arg(required_if_eq("role", "tenant"))]
        for_tenant: Option<String>,
    },
    /// Revoke a credential: refused at its next connect, its connections closed.
    Revoke { key_id: String },
    /// List every credential, revoked ones included (never a secret).
    List,
}
