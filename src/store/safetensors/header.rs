//! The safetensors header read straight into typed entries: no JSON tree
//! of the whole header is built, and every part an untrusted header can
//! make large (names, shapes, the tensor count, `__metadata__`) is bounded
//! while it is read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::store::{clip, DType, StoreError, MAX_TENSORS_PER_FILE};

/// Most dimensions a shape may have. Real tensors have at most five (video
/// convolutions; GGUF allows four), and a header's shape is copied into
/// outputs and messages: one of 30 million dimensions cost 2.4 GB.
pub const MAX_DIMS: usize = 8;
/// Longest tensor name, in bytes. HF names are dotted module paths, the
/// longest in the wild under 200 bytes; 1024 leaves room for any of them
/// while keeping what outputs, indexes and messages copy of a name small.
pub const MAX_NAME_LEN: usize = 1024;
/// Most `__metadata__` entries. Writers store a handful (`format`, training
/// notes); each costs about a hundred bytes of memory beyond its text.
pub const MAX_METADATA_ENTRIES: usize = 4096;

/// A tensor's entry as the header states it; checked by [`parse_header`].
#[derive(Deserialize)]
pub(super) struct RawInfo {
    pub dtype: DTypeName,
    pub shape: Shape,
    pub data_offsets: (u64, u64),
}

/// A dtype, or the (clipped) spelling that is none.
pub(super) struct DTypeName(pub std::result::Result<DType, String>);

impl<'de> Deserialize<'de> for DTypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DTypeName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dtype string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<DTypeName, E> {
                Ok(DTypeName(
                    DType::from_safetensors(s).ok_or_else(|| clip(s).into_owned()),
                ))
            }
        }
        d.deserialize_str(V)
    }
}

/// A shape: its first [`MAX_DIMS`] dimensions, and how many it has (the
/// rest are read and dropped, so a hostile shape costs no memory).
pub(super) struct Shape {
    pub dims: Vec<u64>,
    pub count: usize,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of non-negative integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Shape, A::Error> {
                let mut dims = Vec::new();
                let mut count = 0;
                while let Some(d) = seq.next_element::<u64>()? {
                    if count < MAX_DIMS {
                        dims.push(d);
                    }
                    count += 1;
                }
                Ok(Shape { dims, count })
            }
        }
        d.deserialize_seq(V)
    }
}

/// A tensor name, or the (clipped) start and length of one too long.
enum Name {
    Fits(String),
    TooLong(String, usize),
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tensor name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Name, E> {
                Ok(if s.len() > MAX_NAME_LEN {
                    Name::TooLong(clip(s).into_owned(), s.len())
                } else {
                    Name::Fits(s.to_string())
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The `__metadata__` map, refused past [`MAX_METADATA_ENTRIES`].
struct MetadataMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for MetadataMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetadataMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<MetadataMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if out.len() == MAX_METADATA_ENTRIES {
                        return Err(serde::de::Error::custom(format!(
                            "it has more than {MAX_METADATA_ENTRIES} entries"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(MetadataMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The header's entries in file order (so that duplicate names are seen
/// rather than silently keeping the last), each read straight into its
/// typed form: no JSON tree of the whole header is built. A problem that
/// belongs to one entry is left in `fault`, naming it.
pub(super) struct Entries<'a> {
    pub path: &'a Path,
    pub fault: &'a mut Option<StoreError>,
}

/// What [`Entries`] reads: tensors in file order and `__metadata__`.
pub(super) type RawHeader = (Vec<(String, RawInfo)>, BTreeMap<String, String>);

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = RawHeader;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<RawHeader, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = RawHeader;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<RawHeader, A::Error> {
        let path = self.path;
        let mut fail = |e: StoreError| {
            *self.fault = Some(e);
            serde::de::Error::custom("see the fault")
        };
        let mut tensors = Vec::new();
        let mut metadata = None;
        while let Some(name) = m.next_key::<Name>()? {
            let name = match name {
                Name::Fits(n) => n,
                Name::TooLong(head, len) => {
                    return Err(fail(StoreError::tensor(
                        path,
                        &head,
                        format!(
                            "its name is {len} bytes long, over llmtool's limit of {MAX_NAME_LEN}"
                        ),
                    )))
                }
            };
            if name == "__metadata__" {
                let map = m.next_value::<MetadataMap>().map_err(|e| {
                    fail(StoreError::invalid(
                        path,
                        format!("__metadata__ must map strings to strings: {e}"),
                    ))
                })?;
                if metadata.replace(map.0).is_some() {
                    return Err(fail(StoreError::tensor(
                        path,
                        &name,
                        "appears twice in the header",
                    )));
                }
                continue;
            }
            if tensors.len() as u64 == MAX_TENSORS_PER_FILE {
                return Err(fail(StoreError::invalid(
                    path,
                    format!("the header declares more than llmtool's limit of {MAX_TENSORS_PER_FILE} tensors per file (corrupt or hostile file)"),
                )));
            }
            let info = m.next_value::<RawInfo>().map_err(|e| {
                fail(StoreError::tensor(
                    path,
                    &name,
                    format!("malformed entry (expected dtype, shape, data_offsets): {e}"),
                ))
            })?;
            tensors.push((name, info));
        }
        Ok((tensors, metadata.unwrap_or_default()))
    }
}
