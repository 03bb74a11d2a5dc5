//! The image store of one region (DESIGN.md section 14): the bytes of imported images, on the
//! `object_store` crate, the local filesystem under `<data-dir>/<region>/store/` by default.
//! Objects are keyed `images/<image id>`; an import writes `staging/<image id>` first and
//! renames it into place once it is complete and checked, so no reader ever sees half a file.

use std::path::PathBuf;
use std::sync::Arc;

use ims_domain::ImageId;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};

/// The store of one region's image files.
#[derive(Clone, Debug)]
pub struct ImageStore {
    objects: Arc<LocalFileSystem>,
    root: PathBuf,
}

impl ImageStore {
    /// Opens (or creates) the store under `root`.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("staging"))?;
        std::fs::create_dir_all(root.join("images"))?;
        let objects = LocalFileSystem::new_with_prefix(&root).map_err(std::io::Error::other)?;
        Ok(Self {
            objects: Arc::new(objects),
            root,
        })
    }

    fn key(id: &ImageId) -> Path {
        Path::from(format!("images/{id}"))
    }

    fn staging_key(id: &ImageId) -> Path {
        Path::from(format!("staging/{id}"))
    }

    /// Where an import writes the file before it is checked (a local path the worker streams to).
    pub fn staging_path(&self, id: &ImageId) -> PathBuf {
        self.root.join("staging").join(id.to_string())
    }

    /// Where the image's object lies on the local filesystem (for streaming it elsewhere).
    pub fn object_path(&self, id: &ImageId) -> PathBuf {
        self.root.join("images").join(id.to_string())
    }

    /// Moves a complete, checked staging file into place as the image's object.
    pub async fn commit(&self, id: &ImageId) -> object_store::Result<()> {
        self.objects
            .rename(&Self::staging_key(id), &Self::key(id))
            .await
    }

    /// Forgets a staging file (a refused or failed import leaves nothing behind).
    pub fn discard(&self, id: &ImageId) {
        let _ = std::fs::remove_file(self.staging_path(id));
    }

    /// Removes the image's object, if it has one (deleting twice is fine).
    pub async fn remove(&self, id: &ImageId) -> object_store::Result<()> {
        match self.objects.delete(&Self::key(id)).await {
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
        self.objects.get_opts(&Self::key(id), options).await
    }

    /// The object's size, if there is one.
    pub async fn size(&self, id: &ImageId) -> object_store::Result<Option<u64>> {
        match self.objects.head(&Self::key(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// The store folder of `region` under `data_dir`.
pub fn store_path(data_dir: &std::path::Path, region: &ims_domain::RegionId) -> PathBuf {
    data_dir.join(region.as_str()).join("store")
}
