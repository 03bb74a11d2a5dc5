//! The image store of one region (DESIGN.md section 14): the bytes of imported images, on the
//! `object_store` crate. By default the local filesystem under `<data-dir>/<region>/store/`;
//! with the `s3` feature, a bucket (`--store s3://bucket/prefix`), keyed
//! `<prefix>/<region>/images/<image id>`.
//!
//! An import writes a local staging file (`<data-dir>/<region>/store/staging/<image id>`) first;
//! only once it is complete and checked does it become the object (a rename on the filesystem,
//! a multipart upload to S3), so no reader ever sees half a file.

#[cfg(feature = "s3")]
mod s3;

use std::path::PathBuf;
use std::sync::Arc;

use ims_domain::{ImageId, RegionId};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};

/// Where a deployment keeps its image files (`imsd run --store`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// `<data-dir>/<region>/store/images/` (`--store local`, the default).
    #[default]
    Local,
    /// A bucket shared by every process of the deployment
    /// (`--store s3://bucket[/prefix][?endpoint=URL&region=R]`). Settings come from the usual
    /// `AWS_*` environment, and from the URL's query for those that are not secret.
    S3 {
        bucket: String,
        prefix: String,
        /// object_store's S3 settings from the query, such as `endpoint` and `region`.
        options: Vec<(String, String)>,
    },
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "local" {
            return Ok(Self::Local);
        }
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err(format!(
                "{text:?} is not a store: give `local` or `s3://bucket[/prefix]`"
            ));
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "{text:?} names no bucket: give `s3://bucket[/prefix]`"
            ));
        }
        let mut options = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let key = key.to_ascii_lowercase();
            // A command line shows in `ps` and in logs: keys belong in the environment.
            if ["key", "secret", "token", "password"]
                .iter()
                .any(|word| key.contains(word))
            {
                return Err(format!(
                    "the store URL carries {key:?}: credentials come from the environment \
                     (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), never \
                     from the command line"
                ));
            }
            options.push((key, value.to_owned()));
        }
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            options,
        })
    }
}

/// The store of one region's image files.
#[derive(Clone, Debug)]
pub struct ImageStore {
    objects: Arc<dyn ObjectStore>,
    /// The key prefix of this region's objects.
    images: Path,
    /// The local folder imports are staged in.
    staging: PathBuf,
    /// Whether the objects lie on the filesystem with the staging folder (commit renames).
    local: bool,
}

impl ImageStore {
    /// Opens (or creates) the store of `region`, staging under `data_dir`.
    pub fn open(
        location: &StoreLocation,
        data_dir: &std::path::Path,
        region: &RegionId,
    ) -> std::io::Result<Self> {
        let root = store_path(data_dir, region);
        std::fs::create_dir_all(root.join("staging"))?;
        if *location == StoreLocation::Local {
            std::fs::create_dir_all(root.join("images"))?;
        }
        Self::open_existing(location, data_dir, region)?
            .ok_or_else(|| std::io::Error::other(format!("{} vanished", root.display())))
    }

    /// Opens the store of `region` to read, creating nothing: `None` when a local store was
    /// never created (no image was ever imported there). For offline audits.
    pub fn open_existing(
        location: &StoreLocation,
        data_dir: &std::path::Path,
        region: &RegionId,
    ) -> std::io::Result<Option<Self>> {
        let root = store_path(data_dir, region);
        match location {
            StoreLocation::Local if !root.join("images").is_dir() => Ok(None),
            StoreLocation::Local => Ok(Some(Self {
                objects: Arc::new(
                    LocalFileSystem::new_with_prefix(&root).map_err(std::io::Error::other)?,
                ),
                images: Path::from("images"),
                staging: root.join("staging"),
                local: true,
            })),
            StoreLocation::S3 {
                bucket,
                prefix,
                options,
            } => Ok(Some(Self {
                objects: open_s3(bucket, options)?,
                images: Path::from_iter(
                    prefix
                        .split('/')
                        .filter(|part| !part.is_empty())
                        .chain([region.as_str(), "images"]),
                ),
                staging: root.join("staging"),
                local: false,
            })),
        }
    }

    fn key(&self, id: &ImageId) -> Path {
        self.images.clone().join(id.to_string())
    }

    /// Where an import writes the file before it is checked (a local path the worker streams to).
    pub fn staging_path(&self, id: &ImageId) -> PathBuf {
        self.staging.join(id.to_string())
    }

    /// Moves a complete, checked staging file into place as the image's object.
    pub async fn commit(&self, id: &ImageId) -> object_store::Result<()> {
        if self.local {
            let staged = Path::from(format!("staging/{id}"));
            return self.objects.rename(&staged, &self.key(id)).await;
        }
        self.upload(id).await?;
        self.discard(id);
        Ok(())
    }

    /// Streams the staging file into the object, in parts, so memory stays at a few parts.
    async fn upload(&self, id: &ImageId) -> object_store::Result<()> {
        use tokio::io::AsyncReadExt as _;
        const PART_BYTES: usize = 8 << 20;
        let failed = |source: std::io::Error| object_store::Error::Generic {
            store: "staging",
            source: Box::new(source),
        };
        let mut file = tokio::fs::File::open(self.staging_path(id))
            .await
            .map_err(failed)?;
        let upload = self.objects.put_multipart(&self.key(id)).await?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0u8; PART_BYTES];
        loop {
            let read = file.read(&mut buffer).await.map_err(failed)?;
            if read == 0 {
                break;
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buffer[..read]);
        }
        writer.finish().await?;
        Ok(())
    }

    /// Forgets a staging file (a refused or failed import leaves nothing behind).
    pub fn discard(&self, id: &ImageId) {
        let _ = std::fs::remove_file(self.staging_path(id));
    }

    /// Removes the image's object, if it has one (deleting twice is fine).
    pub async fn remove(&self, id: &ImageId) -> object_store::Result<()> {
        match self.objects.delete(&self.key(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The image's object, whole or a byte range of it.
    pub async fn get(
        &self,
        id: &ImageId,
        range: Option<GetRange>,
    ) -> object_store::Result<GetResult> {
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        self.objects.get_opts(&self.key(id), options).await
    }

    /// The object's size, if there is one.
    pub async fn size(&self, id: &ImageId) -> object_store::Result<Option<u64>> {
        match self.objects.head(&self.key(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The object's size and SHA-256, read whole; `None` when there is no object.
    pub async fn digest(&self, id: &ImageId) -> object_store::Result<Option<(u64, String)>> {
        use futures::StreamExt as _;
        let mut stream = match self.get(id, None).await {
            Ok(found) => found.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut sha256 = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            sha256.update(&chunk);
        }
        Ok(Some((size, hex::encode(sha256.finish()))))
    }
}

#[cfg(feature = "s3")]
fn open_s3(bucket: &str, options: &[(String, String)]) -> std::io::Result<Arc<dyn ObjectStore>> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    // A few quick retries: a store that is down should answer `unavailable` in seconds, not
    // after object_store's default of three minutes.
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_http_connector(crate::s3::HyperConnector);
    for (key, value) in options {
        let setting: AmazonS3ConfigKey = key.parse().map_err(|_| {
            std::io::Error::other(format!(
                "s3://{bucket}: {key:?} is not an S3 setting (endpoint, region, \
                 skip_signature, virtual_hosted_style_request, …)"
            ))
        })?;
        if matches!(setting, AmazonS3ConfigKey::Endpoint) && value.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        builder = builder.with_config(setting, value);
    }
    Ok(Arc::new(builder.build().map_err(std::io::Error::other)?))
}

#[cfg(not(feature = "s3"))]
fn open_s3(bucket: &str, _options: &[(String, String)]) -> std::io::Result<Arc<dyn ObjectStore>> {
    Err(std::io::Error::other(format!(
        "s3://{bucket}: this imsd was built without S3; build it with `--features s3`"
    )))
}

/// The store folder of `region` under `data_dir`.
pub fn store_path(data_dir: &std::path::Path, region: &ims_domain::RegionId) -> PathBuf {
    data_dir.join(region.as_str()).join("store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!("local".parse(), Ok(StoreLocation::Local));
        assert_eq!(
            "s3://images/prod/eu?endpoint=http://127.0.0.1:9000&region=eu-west-1".parse(),
            Ok(StoreLocation::S3 {
                bucket: "images".into(),
                prefix: "prod/eu".into(),
                options: vec![
                    ("endpoint".into(), "http://127.0.0.1:9000".into()),
                    ("region".into(), "eu-west-1".into())
                ],
            })
        );
        assert_eq!(
            "s3://images".parse(),
            Ok(StoreLocation::S3 {
                bucket: "images".into(),
                prefix: String::new(),
                options: Vec::new(),
            })
        );
        let error = "s3://images?secret_access_key=hunter2"
            .parse::<StoreLocation>()
            .unwrap_err();
        assert!(error.contains("from the environment"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = "gs://images".parse::<StoreLocation>().unwrap_err();
        assert!(
            error.contains("`local` or `s3://bucket[/prefix]`"),
            "{error}"
        );
        assert!("s3:///x".parse::<StoreLocation>().is_err());
    }
}
