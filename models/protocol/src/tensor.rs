//! Typed tensor storage: one `Vec` of the element type, row-major, with the
//! conversions between it and JSON numbers and little-endian bytes.

use serde::Serialize;

use crate::{DataType, ProtocolError};

/// A named tensor with its shape and typed, row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub data: TensorData,
}

impl Tensor {
    /// The tensor's v2 datatype.
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// The size of the first dimension, the batch size for batched models.
    pub fn batch_size(&self) -> Option<u64> {
        self.shape.first().copied()
    }

    /// Size of the data in bytes in the binary tensor extension.
    pub fn byte_len(&self) -> usize {
        self.data.len() * self.datatype().element_size().unwrap_or(1)
    }
}

/// An element type that a tensor can hold: how it reads from JSON and from
/// little-endian bytes, and how it writes to bytes.
pub trait Element: Copy + Serialize + Sized + 'static {
    /// Its v2 datatype.
    const DATATYPE: DataType;
    /// Converts a JSON number or boolean, rejecting lossy conversions.
    fn from_json(value: JsonScalar) -> Result<Self, String>;
    /// Reads one element from exactly `element_size` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Result<Self, u8>;
    /// Appends the element as little-endian bytes.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads every element of `bytes` (a whole number of them), or says
    /// which element is invalid and its byte.
    fn from_le_slice(bytes: &[u8]) -> Result<Vec<Self>, (usize, u8)> {
        let size = std::mem::size_of::<Self>().max(1);
        let mut out = Vec::with_capacity(bytes.len() / size);
        for (index, chunk) in bytes.chunks_exact(size).enumerate() {
            out.push(Self::from_le(chunk).map_err(|byte| (index, byte))?);
        }
        Ok(out)
    }
    /// Appends every element of `values` as little-endian bytes.
    fn write_le_slice(values: &[Self], out: &mut Vec<u8>) {
        out.reserve(std::mem::size_of_val(values));
        for value in values {
            value.write_le(out);
        }
    }
    /// The elements of `data`, if they are of this type.
    fn view(data: &TensorData) -> Option<&[Self]>;
    /// Wraps elements of this type.
    fn into_data(values: Vec<Self>) -> TensorData;
}

/// The variant-specific part of an [`Element`] impl.
macro_rules! variant_of {
    ($variant:ident) => {
        fn view(data: &TensorData) -> Option<&[Self]> {
            match data {
                TensorData::$variant(values) => Some(values),
                _ => None,
            }
        }
        fn into_data(values: Vec<Self>) -> TensorData {
            TensorData::$variant(values)
        }
    };
}

/// A JSON scalar as serde hands it to the decoder.
#[derive(Debug, Clone, Copy)]
pub enum JsonScalar {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// The byte conversions of a number type. The slice forms work on whole
/// buffers of known size, which the compiler can turn into plain copies;
/// element by element into a growing vector, decoding a 784-value binary
/// request took about twice as long (`switchyard-bench codec`).
macro_rules! le_bytes {
    ($ty:ty) => {
        fn from_le(bytes: &[u8]) -> Result<Self, u8> {
            let mut raw = [0u8; std::mem::size_of::<$ty>()];
            raw.copy_from_slice(bytes);
            Ok(<$ty>::from_le_bytes(raw))
        }
        fn write_le(self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
        fn from_le_slice(bytes: &[u8]) -> Result<Vec<Self>, (usize, u8)> {
            const SIZE: usize = std::mem::size_of::<$ty>();
            Ok(bytes
                .chunks_exact(SIZE)
                .map(|chunk| {
                    let mut raw = [0u8; SIZE];
                    raw.copy_from_slice(chunk);
                    <$ty>::from_le_bytes(raw)
                })
                .collect())
        }
        fn write_le_slice(values: &[Self], out: &mut Vec<u8>) {
            const SIZE: usize = std::mem::size_of::<$ty>();
            let start = out.len();
            out.resize(start + values.len() * SIZE, 0);
            for (chunk, value) in out[start..].chunks_exact_mut(SIZE).zip(values) {
                chunk.copy_from_slice(&value.to_le_bytes());
            }
        }
    };
}

macro_rules! integer_element {
    ($ty:ty, $variant:ident) => {
        impl Element for $ty {
            const DATATYPE: DataType = DataType::$variant;
            variant_of!($variant);
            fn from_json(value: JsonScalar) -> Result<Self, String> {
                match value {
                    JsonScalar::Unsigned(v) => {
                        <$ty>::try_from(v).map_err(|_| format!("{v} is out of range"))
                    }
                    JsonScalar::Signed(v) => {
                        <$ty>::try_from(v).map_err(|_| format!("{v} is out of range"))
                    }
                    JsonScalar::Float(v) => Err(format!("{v} is not an integer")),
                    JsonScalar::Bool(v) => Err(format!("{v} is a boolean")),
                }
            }
            le_bytes!($ty);
        }
    };
}

integer_element!(u8, Uint8);
integer_element!(u16, Uint16);
integer_element!(u32, Uint32);
integer_element!(u64, Uint64);
integer_element!(i8, Int8);
integer_element!(i16, Int16);
integer_element!(i32, Int32);
integer_element!(i64, Int64);

macro_rules! float_element {
    ($ty:ty, $variant:ident) => {
        impl Element for $ty {
            const DATATYPE: DataType = DataType::$variant;
            variant_of!($variant);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            #[inline]
            fn from_json(value: JsonScalar) -> Result<Self, String> {
                match value {
                    // JSON has no NaN or infinity, so a non-finite result is
                    // a finite number beyond the type's range: refused
                    // rather than silently turned into an infinity.
                    JsonScalar::Float(v) => Some(v as $ty)
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| format!("{v} is out of range for {}", Self::DATATYPE)),
                    JsonScalar::Unsigned(v) => Ok(v as $ty),
                    JsonScalar::Signed(v) => Ok(v as $ty),
                    JsonScalar::Bool(v) => Err(format!("{v} is a boolean")),
                }
            }
            le_bytes!($ty);
        }
    };
}

float_element!(f32, Fp32);
float_element!(f64, Fp64);

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    variant_of!(Bool);
    fn from_json(value: JsonScalar) -> Result<Self, String> {
        match value {
            JsonScalar::Bool(v) => Ok(v),
            other => Err(format!("{other:?} is not true or false")),
        }
    }
    fn from_le(bytes: &[u8]) -> Result<Self, u8> {
        match bytes.first().copied() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(other) => Err(other),
            None => Err(0),
        }
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

/// Calls `$body` with `$v` bound to the typed vector inside a [`TensorData`],
/// so code that is the same for every element type is written once.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::Uint8($v) => $body,
            $crate::TensorData::Uint16($v) => $body,
            $crate::TensorData::Uint32($v) => $body,
            $crate::TensorData::Uint64($v) => $body,
            $crate::TensorData::Int8($v) => $body,
            $crate::TensorData::Int16($v) => $body,
            $crate::TensorData::Int32($v) => $body,
            $crate::TensorData::Int64($v) => $body,
            $crate::TensorData::Fp32($v) => $body,
            $crate::TensorData::Fp64($v) => $body,
        }
    };
}

/// Tensor elements, row-major, in the tensor's element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

/// Evaluates `$body` with the type alias `$ty` set to the element type of
/// `$dt`, or `$unsupported` for a datatype without typed storage (matched
/// by `$other`).
macro_rules! for_datatype {
    ($dt:expr, $ty:ident => $body:expr, $other:pat => $unsupported:expr) => {{
        macro_rules! arm {
            ($elem:ty) => {{
                type $ty = $elem;
                $body
            }};
        }
        match $dt {
            DataType::Bool => arm!(bool),
            DataType::Uint8 => arm!(u8),
            DataType::Uint16 => arm!(u16),
            DataType::Uint32 => arm!(u32),
            DataType::Uint64 => arm!(u64),
            DataType::Int8 => arm!(i8),
            DataType::Int16 => arm!(i16),
            DataType::Int32 => arm!(i32),
            DataType::Int64 => arm!(i64),
            DataType::Fp32 => arm!(f32),
            DataType::Fp64 => arm!(f64),
            $other => $unsupported,
        }
    }};
}
pub(crate) use for_datatype;

/// Evaluates `$body` (a `Result<Vec<$ty>, ProtocolError>`) with `$ty` the
/// element type of `$dt`, and wraps the vector as [`TensorData`]; datatypes
/// without typed storage are refused.
macro_rules! build_for_datatype {
    ($dt:expr, $ty:ident => $body:expr) => {
        $crate::tensor::for_datatype!(
            $dt,
            $ty => $body.map(<$ty as $crate::tensor::Element>::into_data),
            other @ (DataType::Fp16 | DataType::Bf16 | DataType::Bytes) => {
                Err(ProtocolError::UnsupportedDatatype(other))
            }
        )
    };
}

impl TensorData {
    /// The v2 datatype of the elements.
    pub fn datatype(&self) -> DataType {
        fn of<T: Element>(_: &[T]) -> DataType {
            T::DATATYPE
        }
        with_tensor_data!(self, v => of(v))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the elements as little-endian bytes (the binary extension).
    pub fn write_le(&self, out: &mut Vec<u8>) {
        with_tensor_data!(self, v => Element::write_le_slice(v.as_slice(), out));
    }

    /// Decodes little-endian bytes of `datatype`. The caller has checked that
    /// `bytes` holds a whole number of elements.
    pub fn from_le_bytes(
        tensor: &str,
        datatype: DataType,
        bytes: &[u8],
    ) -> Result<Self, ProtocolError> {
        fn read<T: Element>(tensor: &str, bytes: &[u8]) -> Result<Vec<T>, ProtocolError> {
            T::from_le_slice(bytes).map_err(|(index, byte)| ProtocolError::BadBool {
                tensor: tensor.to_owned(),
                index,
                byte,
            })
        }
        build_for_datatype!(datatype, T => read::<T>(tensor, bytes))
    }

    /// Concatenates tensors of one datatype (used to form a batch). Returns
    /// `None` when the datatypes differ.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a TensorData>) -> Option<TensorData> {
        let mut parts = parts.into_iter();
        let mut out = parts.next()?.clone();
        for part in parts {
            let appended = with_tensor_data!(&mut out, dst => append(dst, part));
            if !appended {
                return None;
            }
        }
        return Some(out);

        fn append<T: Element>(dst: &mut Vec<T>, src: &TensorData) -> bool {
            match src.as_slice::<T>() {
                Some(values) => {
                    dst.extend_from_slice(values);
                    true
                }
                None => false,
            }
        }
    }

    /// The elements as a slice of `T`, if `T` is their type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::view(self)
    }

    /// Elements `start..end` as a new tensor of the same type (used to split
    /// a batch's outputs back into per-request tensors).
    pub fn slice(&self, start: usize, end: usize) -> Option<TensorData> {
        fn part<T: Element>(values: &[T], start: usize, end: usize) -> Option<TensorData> {
            values
                .get(start..end)
                .map(|part| T::into_data(part.to_vec()))
        }
        with_tensor_data!(self, v => part(v, start, end))
    }
}
