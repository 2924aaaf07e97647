//! Parsing of the GGUF container: header, metadata key/values and tensor infos.
//!
//! The file is memory-mapped and every read is bounds-checked, so a damaged or hostile file
//! yields a [`GgufError`] instead of a panic or a huge allocation.

use crate::error::GgufError;
use crate::quant::{self, GgmlType};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays of arrays are legal but nobody nests deeply; the cap keeps recursion bounded.
const MAX_ARRAY_DEPTH: usize = 4;
/// No real tensor has more; ggml's own limit is 4.
const MAX_DIMS: u32 = 8;

/// A metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// Any integer type, widened; GGUF writers disagree on which width they use for ids and counts.
    pub fn as_i128(&self) -> Option<i128> {
        use MetadataValue::*;
        Some(match *self {
            U8(x) => x.into(),
            I8(x) => x.into(),
            U16(x) => x.into(),
            I16(x) => x.into(),
            U32(x) => x.into(),
            I32(x) => x.into(),
            U64(x) => x.into(),
            I64(x) => x.into(),
            _ => return None,
        })
    }

    /// Any float or integer type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(x) => Some(x.into()),
            MetadataValue::F64(x) => Some(x),
            _ => self.as_i128().map(|x| x as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Short description for error messages, e.g. "a string" or "an array of 3 items".
    pub fn describe(&self) -> String {
        use MetadataValue::*;
        match self {
            U8(_) => "a u8".into(),
            I8(_) => "an i8".into(),
            U16(_) => "a u16".into(),
            I16(_) => "an i16".into(),
            U32(_) => "a u32".into(),
            I32(_) => "an i32".into(),
            U64(_) => "a u64".into(),
            I64(_) => "an i64".into(),
            F32(_) => "an f32".into(),
            F64(_) => "an f64".into(),
            Bool(_) => "a bool".into(),
            String(_) => "a string".into(),
            Array(items) => format!("an array of {} items", items.len()),
        }
    }
}

impl fmt::Display for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MetadataValue::*;
        match self {
            String(s) => write!(f, "{s:?}"),
            Bool(b) => write!(f, "{b}"),
            F32(x) => write!(f, "{x}"),
            F64(x) => write!(f, "{x}"),
            Array(items) => write!(f, "[{} items]", items.len()),
            other => write!(f, "{}", other.as_i128().unwrap_or_default()),
        }
    }
}

/// Where a tensor lives in the file and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (row length), so an HF `[out, in]` matrix is
    /// `[in, out]` here.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape as PyTorch / safetensors write it (the dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open, parsed GGUF file. Tensor data stays in the memory map until asked for.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Maps and parses `path`. Checks that every tensor's data lies inside the file, so
    /// [`GgufFile::tensor_data`] cannot fail afterwards.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        // SAFETY: the map is read-only and private to this value; like every mmap reader we
        // rely on nobody truncating the file while it is open (which would fault, not corrupt).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        Self::parse(path.to_path_buf(), mmap)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<Self, GgufError> {
        let mut cur = Cursor {
            path: &path,
            buf: &mmap,
            pos: 0,
        };
        let magic = cur.bytes(4, "magic")?;
        if magic != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(GgufError::BadMagic { path, found });
        }
        let version = cur.u32("version")?;
        // v1 used 32-bit counts and lengths; nothing current writes it.
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion { path, version });
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = cur.string(&format!("metadata key #{i}"))?;
            let ty = cur.u32(&format!("type of metadata {key:?}"))?;
            let value = cur.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i128() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
                _ => {
                    return Err(
                        cur.malformed(format!("general.alignment {v} is not a power of two"))
                    )
                }
            },
        };

        let mut infos = Vec::new();
        for i in 0..n_tensors {
            let name = cur.string(&format!("name of tensor #{i}"))?;
            let n_dims = cur.u32(&format!("dims of tensor {name:?}"))?;
            if n_dims > MAX_DIMS {
                return Err(cur.malformed(format!("tensor {name:?} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| cur.u64(&format!("dims of tensor {name:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            let ty = GgmlType::from_id(cur.u32(&format!("type of tensor {name:?}"))?);
            let rel_offset = cur.u64(&format!("offset of tensor {name:?}"))?;
            infos.push((name, dims, ty, rel_offset));
        }
        let data_offset = cur.pos.next_multiple_of(alignment);

        let file_len = mmap.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ty, rel_offset) in infos {
            let Some((block, type_size)) = ty.block_layout() else {
                return Err(GgufError::UnsupportedType {
                    path,
                    tensor: name,
                    ty: ty.name(),
                });
            };
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| cur.malformed(format!("tensor {name:?} dims {dims:?} overflow")))?;
            if dims.first().is_some_and(|&row| row % block != 0) {
                return Err(cur.malformed(format!(
                    "tensor {name:?} rows of {} elements are not whole {ty} blocks of {block}",
                    dims[0]
                )));
            }
            let n_bytes = (n_elements / block)
                .checked_mul(type_size)
                .ok_or_else(|| cur.malformed(format!("tensor {name:?} size overflows")))?;
            let start = data_offset.checked_add(rel_offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                    name,
                    dims,
                    ty,
                    offset: start,
                    n_bytes,
                }),
                _ => {
                    return Err(GgufError::Truncated {
                        path,
                        what: format!("data of tensor {name:?}"),
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        len: file_len,
                    })
                }
            }
        }

        Ok(GgufFile {
            path,
            mmap,
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found: found.describe(),
        }
    }

    /// A required non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_i128()
            .and_then(|x| u64::try_from(x).ok())
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// An optional non-negative integer: absent is `None`, present but mistyped is an error.
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.get_u64(key).map(Some),
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| self.wrong_type(key, "a number", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a bool", v)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .and_then(|items| items.iter().map(MetadataValue::as_str).collect())
            .ok_or_else(|| self.wrong_type(key, "an array of strings", v))
    }

    pub fn get_int_array(&self, key: &str) -> Result<Vec<i128>, GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .and_then(|items| items.iter().map(MetadataValue::as_i128).collect())
            .ok_or_else(|| self.wrong_type(key, "an array of integers", v))
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw (still quantized) bytes of a tensor.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // Bounds were checked at open for every TensorInfo this file handed out.
        &self.mmap[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }

    /// The tensor's elements as f32, in ggml order (which is row-major for the reversed dims).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })?;
        self.dequantize_info(info)
    }

    pub fn dequantize_info(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let mut out = Vec::with_capacity(info.n_elements() as usize);
        if !quant::dequantize_into(info.ty, self.tensor_data(info), &mut out) {
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                tensor: info.name.clone(),
                ty: info.ty.name(),
            });
        }
        Ok(out)
    }
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: u64,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, what: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            what,
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let len = self.buf.len() as u64;
        match self.pos.checked_add(n) {
            Some(end) if end <= len => {
                let out = &self.buf[self.pos as usize..end as usize];
                self.pos = end;
                Ok(out)
            }
            end => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                start: self.pos,
                end: end.unwrap_or(u64::MAX),
                len,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.malformed(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetadataValue, GgufError> {
        use MetadataValue as V;
        let what = || format!("value of metadata {key:?}");
        Ok(match ty {
            0 => V::U8(u8::from_le_bytes(self.array(&what())?)),
            1 => V::I8(i8::from_le_bytes(self.array(&what())?)),
            2 => V::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => V::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => V::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => V::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => V::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => match self.array::<1>(&what())?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(self.malformed(format!("metadata {key:?} has bool byte {b}"))),
            },
            8 => V::String(self.string(&what())?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed(format!("metadata {key:?} nests arrays too deeply")));
                }
                let item_ty = self.u32(&what())?;
                let count = self.u64(&what())?;
                // Every item takes at least one byte, so a count beyond the bytes left is a lie;
                // capping the reservation keeps a bogus count from allocating terabytes.
                let left = self.buf.len() as u64 - self.pos;
                let mut items = Vec::with_capacity(count.min(left) as usize);
                for _ in 0..count {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => V::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => V::F64(f64::from_le_bytes(self.array(&what())?)),
            other => {
                return Err(
                    self.malformed(format!("metadata {key:?} has unknown value type {other}"))
                )
            }
        })
    }
}
