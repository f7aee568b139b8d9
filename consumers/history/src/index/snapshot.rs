//! The in-memory index saved beside the SQLite file (`<file>.index`), so that
//! opening a large history reads one file instead of rebuilding the index
//! from the database (20M messages: a second or two instead of half a
//! minute).
//!
//! A snapshot holds the rows' timestamps, the per-topic, per-user and
//! per-package bitmaps and the `msg_id` table; the name tables are read from
//! the database on open (they are small), and rows stored after the snapshot
//! was taken are caught up from the database as those of another process
//! are. A snapshot is used only when its format is this version's, it is
//! whole (its length and end marker), and the database still holds its
//! newest row with the same `msg_id` hash; otherwise the index is rebuilt and
//! a new snapshot written. It is written to a temporary file and renamed, so
//! a crash leaves the old snapshot or the new one, never a torn one.
//!
//! Layout (little-endian): magic, format version, newest row id and its
//! `msg_id` hash, `usable`, the timestamps, the `msg_id` table (hashes, then
//! rows), the bitmap of every row, the three bitmap maps (count, then id,
//! length and roaring bytes each), and the magic again.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use super::{MemIndex, MsgIdTable};

const MAGIC: &[u8; 8] = b"FEDHUBIX";
const FORMAT: u32 = 1;

/// What ties a snapshot to its database: the newest row it holds, and that
/// row's `msg_id` hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMark {
    /// The newest row id indexed.
    pub max_row: i64,
    /// Its `msg_id` hash, as stored in the database.
    pub max_row_hash: u64,
}

/// The snapshot file of the database at `database`.
pub fn snapshot_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bitmap(out: &mut Vec<u8>, bitmap: &RoaringBitmap) -> io::Result<()> {
    put_u64(out, bitmap.serialized_size() as u64);
    bitmap.serialize_into(&mut *out)
}

fn put_map(out: &mut Vec<u8>, map: &HashMap<i64, RoaringBitmap>) -> io::Result<()> {
    put_u64(out, map.len() as u64);
    let mut ids: Vec<&i64> = map.keys().collect();
    ids.sort_unstable();
    for id in ids {
        put_u64(out, *id as u64);
        put_bitmap(out, &map[id])?;
    }
    Ok(())
}

/// Reads a snapshot's bytes, failing with what is wrong.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> io::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| corrupt(&format!("truncated in {what}")))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u64(&mut self, what: &str) -> io::Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn len(&mut self, what: &str, item_bytes: usize) -> io::Result<usize> {
        let n = usize::try_from(self.u64(what)?).map_err(|_| corrupt(what))?;
        if n.saturating_mul(item_bytes) > self.bytes.len() - self.at {
            return Err(corrupt(&format!("truncated in {what}")));
        }
        Ok(n)
    }

    fn bitmap(&mut self, what: &str) -> io::Result<RoaringBitmap> {
        let n = self.len(what, 1)?;
        RoaringBitmap::deserialize_from(self.take(n, what)?)
    }

    fn map(&mut self, what: &str) -> io::Result<HashMap<i64, RoaringBitmap>> {
        let n = self.len(what, 16)?;
        let mut map = HashMap::with_capacity(n);
        for _ in 0..n {
            let id = self.u64(what)? as i64;
            map.insert(id, self.bitmap(what)?);
        }
        Ok(map)
    }
}

impl MemIndex {
    /// Writes the index (without its name tables) to `path`, tagged with
    /// `mark`: to a temporary file beside it, then renamed over it. Returns
    /// the bytes written.
    pub fn save_snapshot(&mut self, path: &Path, mark: SnapshotMark) -> io::Result<u64> {
        self.msg_ids.compact();
        let (hashes, rows) = self.msg_ids.base();
        let mut out: Vec<u8> = Vec::with_capacity(64 + self.ts.len() * 8 + hashes.len() * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        put_u64(&mut out, mark.max_row as u64);
        put_u64(&mut out, mark.max_row_hash);
        put_u64(&mut out, u64::from(self.usable));
        put_u64(&mut out, self.ts.len() as u64);
        for t in &self.ts {
            out.extend_from_slice(&t.to_le_bytes());
        }
        put_u64(&mut out, hashes.len() as u64);
        for h in hashes {
            out.extend_from_slice(&h.to_le_bytes());
        }
        for r in rows {
            out.extend_from_slice(&r.to_le_bytes());
        }
        put_bitmap(&mut out, &self.all)?;
        put_map(&mut out, &self.topic_rows)?;
        put_map(&mut out, &self.user_rows)?;
        put_map(&mut out, &self.package_rows)?;
        out.extend_from_slice(MAGIC);

        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(&out)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&partial, path)?;
        Ok(out.len() as u64)
    }

    /// Reads a snapshot written by [`save_snapshot`](Self::save_snapshot):
    /// the index (name tables empty, block bounds not yet computed: call
    /// [`finish_bulk`](Self::finish_bulk)) and its mark.
    pub fn load_snapshot(path: &Path) -> io::Result<(MemIndex, SnapshotMark)> {
        let bytes = std::fs::read(path)?;
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
        };
        if r.take(8, "header")? != MAGIC {
            return Err(corrupt("not a fedhub index snapshot"));
        }
        let format = u32::from_le_bytes(r.take(4, "header")?.try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(corrupt(&format!(
                "snapshot format {format}, this fedhub reads {FORMAT}"
            )));
        }
        let mark = SnapshotMark {
            max_row: r.u64("header")? as i64,
            max_row_hash: r.u64("header")?,
        };
        let usable = r.u64("header")? != 0;
        let n = r.len("timestamps", 8)?;
        let ts: Vec<f64> = r
            .take(n * 8, "timestamps")?
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let n = r.len("msg_id table", 12)?;
        let hashes: Vec<u64> = r
            .take(n * 8, "msg_id table")?
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let rows: Vec<u32> = r
            .take(n * 4, "msg_id table")?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        if !hashes.windows(2).all(|w| w[0] <= w[1]) {
            return Err(corrupt("msg_id table out of order"));
        }
        let all = r.bitmap("rows")?;
        let topic_rows = r.map("topics")?;
        let user_rows = r.map("users")?;
        let package_rows = r.map("packages")?;
        if r.take(8, "end marker")? != MAGIC || r.at != bytes.len() {
            return Err(corrupt("no end marker where expected"));
        }
        let index = MemIndex {
            usable,
            ts,
            all,
            topic_rows,
            user_rows,
            package_rows,
            msg_ids: MsgIdTable::from_base(hashes, rows),
            max_row: mark.max_row,
            ..MemIndex::default()
        };
        Ok((index, mark))
    }
}
