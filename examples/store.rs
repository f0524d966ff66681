//! The blob store as a library, without FUSE: put, get, exists, list, delete against the
//! embedded default (a local directory) or, with `--s3 ENDPOINT BUCKET [PREFIX]`, an S3
//! bucket — and `restore`: the files wombatfs nodes published under that prefix, read by name.
//!
//! ```sh
//! cargo run --release --example store                      # local default in a temp dir
//! AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s \
//!   cargo run --release --example store -- --s3 http://127.0.0.1:8333 my-bucket
//! ```

use std::sync::Arc;

use wombatfs::codec::Compression;
use wombatfs::store::BlobStore;
use wombatfs::tiers::local::LocalStore;
use wombatfs::tiers::s3::{S3Config, S3Store};
use wombatfs::tiers::ObjectStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    let cache = tempfile::tempdir()?;
    let objects: Arc<dyn ObjectStore> = match args.iter().position(|a| a == "--s3") {
        Some(i) => {
            let (endpoint, bucket) = (args.get(i + 1).ok_or("--s3 ENDPOINT BUCKET")?, args.get(i + 2).ok_or("--s3 ENDPOINT BUCKET")?);
            let cfg = S3Config {
                bucket: bucket.clone(),
                prefix: args.get(i + 3).cloned().unwrap_or_else(|| "wombatfs-example".into()),
                endpoint: Some(endpoint.clone()),
                region: "us-east-1".into(),
                path_style: true,
                ..Default::default()
            };
            Arc::new(S3Store::new(&cfg)?)
        }
        None => Arc::new(LocalStore::open(&cache.path().join("objects"), Compression::Auto(1))?),
    };
    rt.block_on(objects.check())?;
    println!("object store: {}", objects.describe());
    let store = BlobStore::open(cache.path(), objects, rt.handle())?;

    let block = vec![42u8; 1 << 20];
    let id = store.put(&block)?; // flat tier + object store, durable on return
    println!("put {} bytes as {id}", block.len());
    assert!(store.exists(&id)?);
    store.flat().remove(&id)?; // lose the local copy: the next get fetches and verifies
    assert_eq!(store.get(&id)?, block);
    println!("get from {} after losing the flat copy: ok", store.tier_of(&id));
    println!("blobs in the store: {}", store.list()?.len());
    store.delete(&id)?;
    assert!(!store.exists(&id)?);
    println!("deleted");

    // the names published by mounted nodes on this store (none for a fresh local store); the
    // name layer sits above the blob store: `sync::names` reads the bucket's snapshots and
    // change journals
    let names = store.block_on(wombatfs::sync::names::restore(store.objects().as_ref()))?;
    println!("restored {} names from the store", names.entries.len());
    for (path, entry) in names.entries.iter().take(5) {
        if let wombatfs::sync::names::Entry::File { blob, size, .. } = entry {
            let bytes = store.get(blob)?;
            assert_eq!(bytes.len() as u64, *size);
            println!("  {} ({size} bytes, verified)", String::from_utf8_lossy(path));
        }
    }
    Ok(())
}
