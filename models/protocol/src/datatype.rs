//! The v2 tensor datatypes and their wire names and sizes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ProtocolError;

/// A v2 tensor datatype. `FP16`, `BF16` and `BYTES` are recognised so that a
/// client gets "not supported" rather than "unknown", but no model here
/// takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    /// Every datatype with its wire name, in one table so parsing and
    /// printing cannot drift apart.
    const NAMES: [(DataType, &'static str); 14] = [
        (DataType::Bool, "BOOL"),
        (DataType::Uint8, "UINT8"),
        (DataType::Uint16, "UINT16"),
        (DataType::Uint32, "UINT32"),
        (DataType::Uint64, "UINT64"),
        (DataType::Int8, "INT8"),
        (DataType::Int16, "INT16"),
        (DataType::Int32, "INT32"),
        (DataType::Int64, "INT64"),
        (DataType::Fp16, "FP16"),
        (DataType::Bf16, "BF16"),
        (DataType::Fp32, "FP32"),
        (DataType::Fp64, "FP64"),
        (DataType::Bytes, "BYTES"),
    ];

    /// The wire name, e.g. `"FP32"`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(dt, _)| *dt == self)
            .map_or("BYTES", |(_, name)| *name)
    }

    /// Bytes per element in the binary tensor extension, `None` for `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(dt, _)| *dt)
            .ok_or_else(|| ProtocolError::UnknownDatatype(s.to_owned()))
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <&str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (dt, name) in DataType::NAMES {
            assert_eq!(dt.as_str(), name);
            assert_eq!(name.parse::<DataType>(), Ok(dt));
        }
        assert!("FLOAT".parse::<DataType>().is_err());
    }
}
