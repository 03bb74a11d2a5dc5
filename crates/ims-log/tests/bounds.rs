//! DESIGN.md section 11: with every field at its maximum, and every character four bytes where
//! the field allows any character, one event envelope stays under 16 KiB, so that every batch
//! and page can be cut to fit NATS.

use std::collections::BTreeMap;

use ims_domain::limits::*;
use ims_domain::*;
use ims_log::{encode_event, Envelope, EnvelopeBody};

/// A character that is a letter and four bytes in UTF-8: the worst case of every text field.
const WIDE: char = '𝕏';

fn wide(chars: usize) -> String {
    std::iter::repeat_n(WIDE, chars).collect()
}

fn ascii(chars: usize) -> String {
    "a".repeat(chars)
}

/// A tenant id at its maximum length, distinct per `n`.
fn long_tenant(n: usize) -> TenantId {
    TenantId::parse(&format!("{n:0>64}")).unwrap()
}

struct Region {
    state: State,
    policy: SharingPolicy,
    next_image: u128,
    events: Vec<Event>,
}

impl Region {
    fn run(&mut self, actor: Actor, command: impl Into<Command>) {
        let command = command.into();
        self.next_image += 1;
        let context = Context {
            actor,
            region: RegionId::parse("eu-west-0").unwrap(),
            now_ms: u64::MAX,
            new_image_id: ImageId::from_bytes(self.next_image.to_be_bytes()),
            expected_version: None,
            policy: &self.policy,
        };
        let events = decide(&self.state, &command, &context).expect("a valid command");
        for event in &events {
            evolve(&mut self.state, event);
        }
        self.events.extend(events);
    }
}

fn largest_tags(policy: &SharingPolicy) -> BTreeMap<String, String> {
    (0..policy.tags_max)
        .map(|i| {
            let key: String = std::iter::once(char::from(b'a' + i as u8))
                .chain(std::iter::repeat_n(WIDE, policy.tag_key_chars_max - 1))
                .collect();
            (key, wide(policy.tag_value_chars_max))
        })
        .collect()
}

fn largest_image(policy: &SharingPolicy, source: CreateSource, disk: DiskKind) -> TenantCommand {
    TenantCommand::CreateImage(Box::new(CreateImage {
        name: wide(policy.name_chars_max),
        disk,
        source,
        os: (disk != DiskKind::Data).then(|| Os {
            platform: wide(OS_FIELD_CHARS_MAX),
            version: wide(OS_FIELD_CHARS_MAX),
            arch: wide(OS_FIELD_CHARS_MAX),
        }),
        min_disk_gb: policy.min_disk_gb_max,
        encryption: None,
        tags: largest_tags(policy),
        description: wide(policy.description_chars_max),
        protected: true,
        family: None,
        exclude_from_latest: false,
    }))
}

#[test]
fn the_largest_valid_events_encode_under_16_kib() {
    let policy = SharingPolicy::default();
    let mut region = Region {
        state: State::default(),
        policy: policy.clone(),
        next_image: 0,
        events: Vec::new(),
    };
    let owner = long_tenant(0);
    let members: Vec<TenantId> = (1..=policy.members_per_image_max)
        .map(long_tenant)
        .collect();
    for tenant in std::iter::once(&owner).chain(&members) {
        region.run(
            Actor::Operator,
            OperatorCommand::RegisterTenant {
                tenant: tenant.clone(),
                quota: None,
                organization: None,
            },
        );
    }
    let owner_actor = Actor::Tenant(owner.clone());
    let ecs = CreateSource::Ecs {
        instance_id: ascii(INSTANCE_ID_CHARS_MAX),
        data_disk_ids: vec![ascii(DATA_DISK_ID_CHARS_MAX); DATA_DISKS_MAX],
    };
    let mut encrypted = largest_image(&policy, ecs.clone(), DiskKind::System);
    if let TenantCommand::CreateImage(create) = &mut encrypted {
        create.encryption = Some(Encryption {
            kms_key_id: ascii(KMS_KEY_ID_CHARS_MAX),
        });
    }
    region.run(owner_actor.clone(), encrypted);
    let file = CreateSource::File {
        url: ascii(URL_CHARS_MAX),
        format: FileFormat::Qcow2,
    };
    region.run(
        owner_actor.clone(),
        largest_image(&policy, file, DiskKind::System),
    );
    region.run(
        owner_actor.clone(),
        largest_image(&policy, ecs, DiskKind::System),
    );
    let image = ImageId::from_bytes(region.next_image.to_be_bytes());
    region.run(
        Actor::Operator,
        OperatorCommand::ReportBuild {
            image_id: image,
            outcome: BuildOutcome::Succeeded {
                size_bytes: u64::MAX,
            },
            checksum_sha256: Some("f".repeat(64)),
            file: Some(FileFacts {
                sha512: "f".repeat(128),
                detected_format: FileFormat::Qcow2,
                virtual_size: Some(u64::MAX),
            }),
            reason: None,
        },
    );
    region.run(
        owner_actor.clone(),
        TenantCommand::ShareImage {
            image_id: image,
            tenants: members.clone(),
            organizations: Vec::new(),
        },
    );
    region.run(
        owner_actor.clone(),
        TenantCommand::UnshareImage {
            image_id: image,
            tenants: None,
            organizations: Vec::new(),
        },
    );
    region.run(
        owner_actor.clone(),
        TenantCommand::CopyImage {
            image_id: image,
            target_region: RegionId::parse("us-east-1").unwrap(),
            name: None,
        },
    );
    let copy = ImageId::from_bytes(region.next_image.to_be_bytes());
    region.run(
        Actor::Operator,
        OperatorCommand::RecordCopyOutcome {
            image_id: image,
            copy_image_id: copy,
            outcome: CopyOutcome::Failed {
                reason: wide(FAILURE_REASON_CHARS_MAX),
            },
        },
    );
    region.run(
        owner_actor.clone(),
        TenantCommand::UpdateImage(Box::new(UpdateImage {
            image_id: image,
            name: Some(wide(policy.name_chars_max)),
            description: Some(wide(policy.description_chars_max)),
            tags: Some(largest_tags(&policy)),
            min_disk_gb: None,
            protected: None,
            family: None,
            exclude_from_latest: None,
        })),
    );
    region.run(
        owner_actor.clone(),
        TenantCommand::ListOnMarketplace {
            image_id: image,
            publisher: wide(PUBLISHER_CHARS_MAX),
            price: Price::PerHour {
                amount_minor: PRICE_MINOR_PER_HOUR_MAX,
                currency: Currency(*b"USD"),
            },
        },
    );
    let file = CreateSource::File {
        url: ascii(URL_CHARS_MAX),
        format: FileFormat::Raw,
    };
    region.run(
        owner_actor.clone(),
        largest_image(&policy, file, DiskKind::Data),
    );
    let failed = ImageId::from_bytes(region.next_image.to_be_bytes());
    region.run(
        Actor::Operator,
        OperatorCommand::ReportBuild {
            image_id: failed,
            outcome: BuildOutcome::Failed,
            checksum_sha256: None,
            file: None,
            reason: Some(wide(FAILURE_REASON_CHARS_MAX)),
        },
    );
    let mut largest = 0;
    for event in &region.events {
        let body = EnvelopeBody {
            position: u64::MAX,
            event_id: [0xff; 16],
            stream: event.stream().to_string(),
            stream_version: u64::MAX,
            command_id: Some([0xff; 16]),
            actor: Actor::Tenant(owner.clone()).to_string(),
            region: "abcdefghijklmnopqrstuvwxyzabcdef".into(),
            recorded_at_ms: u64::MAX,
            event_type: event.type_tag().to_owned(),
            schema_version: u16::MAX,
            payload: encode_event(event),
        };
        let size = Envelope::seal(body, [0xff; 32]).encode().len();
        assert!(
            size <= EVENT_ENVELOPE_BYTES_MAX,
            "{} encodes to {size} bytes, over {EVENT_ENVELOPE_BYTES_MAX}",
            event.type_tag()
        );
        largest = largest.max(size);
    }
    assert!(region.events.len() >= 10, "{}", region.events.len());
    println!("largest valid envelope: {largest} bytes of {EVENT_ENVELOPE_BYTES_MAX}");
}
