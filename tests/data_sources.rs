//! "Your data": every reader behind `data::open`, image decoding, `Preprocess` (bicubic checked
//! against PIL and against an independent reference), stratified splits, bounded memory, and
//! every bad-data error. Fixtures are written by the tests themselves (PNG with the `png`
//! encoder, JPEG with `jpeg-encoder`, PGM/PPM by hand, safetensors raw); the PIL constants were
//! printed by `scripts/bicubic_reference.py`.

use consolidator::data::decode::{decode_image, decode_image_with_limit, MAX_PIXELS};
use consolidator::data::folder::ImageFolder;
use consolidator::data::idx::Idx;
use consolidator::data::image::{bicubic_taps, resize_bicubic, Image};
use consolidator::data::tensors::{open_tensor_file, Layout};
use consolidator::data::{
    labels, locate_data_dir_in, open, stratified_split, DataKind, Dataset, Preprocess, Source, Subset,
};
use consolidator::io::TensorFile;
use consolidator::{Error, Tensor};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("consolidator-sources-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn pgm(w: usize, h: usize, maxval: u32, samples: &[u32]) -> Vec<u8> {
    let mut b = format!("P5\n# test\n{w} {h}\n{maxval}\n").into_bytes();
    for &s in samples {
        if maxval > 255 {
            b.extend_from_slice(&(s as u16).to_be_bytes());
        } else {
            b.push(s as u8);
        }
    }
    b
}

fn ppm_ascii(w: usize, h: usize, maxval: u32, samples: &[u32]) -> Vec<u8> {
    let body: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
    format!("P3\n{w} {h}\n{maxval}\n{}\n", body.join(" ")).into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn err_string<T>(r: consolidator::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A raw safetensors file: `(name, dtype, shape, little-endian bytes)` in order, plus metadata.
fn safetensors(tensors: &[(&str, &str, &[usize], Vec<u8>)], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = Vec::new();
    if !metadata.is_empty() {
        let js = |s: &str| consolidator::io::Json::Str(s.to_string()).to_string();
        let m: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", js(k), js(v))).collect();
        header.push(format!("\"__metadata__\":{{{}}}", m.join(",")));
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push(format!(
            "{:?}:{{\"dtype\":{:?},\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            name,
            dtype,
            dims.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    let text = format!("{{{}}}", header.join(","));
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A source that counts how many images were decoded.
struct Counting<S> {
    inner: S,
    decoded: AtomicUsize,
}

impl<S: Source> Source for Counting<S> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
    fn label(&self, i: usize) -> usize {
        self.inner.label(i)
    }
    fn image(&self, i: usize) -> consolidator::Result<Image> {
        self.decoded.fetch_add(1, Ordering::SeqCst);
        self.inner.image(i)
    }
    fn describe(&self, i: usize) -> String {
        self.inner.describe(i)
    }
}

// ---------------------------------------------------------------------------------------------
// Bicubic resizing

// Pillow 12.3.0: Image.resize(BICUBIC) of the 7x9 test plane
const PIL_BICUBIC_F: &[((usize, usize), &[u32])] = &[
    (
        (4, 5),
        &[
            0x3ea30321, 0x3ebe1197, 0x3ef76c6f, 0x3eefb693, 0x3f248ac9, 0x3f2b5b62, 0x3f0ad5f5, 0x3ed9942d, 0x3ef439e4,
            0x3ef4af23, 0x3efd3545, 0x3f27efb8, 0x3f07fa79, 0x3ead4cf7, 0x3ee85ea5, 0x3f0c24db, 0x3f03ec11, 0x3f18f51b,
            0x3f1f8f01, 0x3ed7d54a,
        ],
    ),
    (
        (13, 20),
        &[
            0xbd74f5db, 0x3c69464e, 0x3e3325d4, 0x3ec23caa, 0x3f27d92e, 0x3f4d4ccf, 0x3f04778c, 0x3df827f0, 0x3de39f06,
            0x3eab44ac, 0x3f108921, 0x3f55fed6, 0x3f5b92b9, 0x3eef2b11, 0x3e2f41f8, 0x3e8c4f1c, 0x3f02f9dd, 0x3f3d90ed,
            0x3f72e58e, 0x3f855fee, 0x3cfaef00, 0x3dde8f62, 0x3e93ebec, 0x3ee847b0, 0x3f0bc846, 0x3f0ebf88, 0x3ec47fc3,
            0x3e37fde7, 0x3e7e4015, 0x3ef69836, 0x3f1dd590, 0x3f2c19ca, 0x3f1f8f20, 0x3eccd07a, 0x3e883dbb, 0x3ed859e2,
            0x3f24e40b, 0x3f3a2e04, 0x3f3fa2f2, 0x3f434439, 0x3e5abf32, 0x3e993d24, 0x3f044e65, 0x3f1b1905, 0x3eb1a2a1,
            0x3dcf6956, 0x3e0ffdcb, 0x3e9b514b, 0x3f02634c, 0x3f3df63d, 0x3f31f85a, 0x3eb7be2d, 0x3e40461c, 0x3e92a3f4,
            0x3eea18de, 0x3f32bc99, 0x3f5f8bbb, 0x3f302b2f, 0x3ebe670b, 0x3e78e288, 0x3ec0aed0, 0x3ef30ed8, 0x3f3ab8ed,
            0x3f4f193f, 0x3ed8d12b, 0x3d9d7352, 0x3e4b22bc, 0x3ef1ec18, 0x3f103bbf, 0x3f0e3033, 0x3ee7f9fb, 0x3e72add2,
            0x3e49079f, 0x3ee4a2c6, 0x3f2ab280, 0x3f326f92, 0x3f23869f, 0x3efb06ba, 0x3ea0c772, 0x3e747343, 0x3f0a0130,
            0x3f223aa9, 0x3f608216, 0x3f7612d4, 0x3f1ed643, 0x3e9e2c01, 0x3ee0cac0, 0x3f2b5aee, 0x3f05f453, 0x3e331877,
            0x3dbe439c, 0x3e85c9bc, 0x3eea6965, 0x3f349ec0, 0x3f4e6ce9, 0x3f063984, 0x3e506eaf, 0x3e850094, 0x3eea83b1,
            0x3f08c10d, 0x3f4f5883, 0x3f47f737, 0x3f37ff75, 0x3f234af3, 0x3f049604, 0x3eee7cc0, 0x3f2b5a49, 0x3f6554aa,
            0x3f30e5b2, 0x3e771e3f, 0x3e2dca9b, 0x3eef801b, 0x3f23c24d, 0x3f158564, 0x3ef41543, 0x3ea6a32b, 0x3e677626,
            0x3ecbe274, 0x3f29dae6, 0x3f45dcfb, 0x3f75c7f5, 0x3f517740, 0x3ef22263, 0x3e82bc58, 0x3ec9f2e2, 0x3f1ed54e,
            0x3f56f683, 0x3f804429, 0x3f54ada4, 0x3ee94020, 0x3eca2580, 0x3f2605b4, 0x3f310148, 0x3eafddbd, 0x3db2af45,
            0x3e4c6cfa, 0x3edbf779, 0x3f1fc263, 0x3f4a28de, 0x3f5d5f48, 0x3f05875a, 0x3ef82701, 0x3ec3f890, 0x3ec3adee,
            0x3f227d4b, 0x3f5afbe2, 0x3f4bdb50, 0x3f22fb94, 0x3f123a10, 0x3f0b58ff, 0x3ef8da11, 0x3ecbe630, 0x3ea0a2a5,
            0x3e54ff52, 0x3e4b6455, 0x3edcd407, 0x3f2c9b45, 0x3f21529d, 0x3ef2d6f3, 0x3ed4350e, 0x3e1147e3, 0x3e66a0df,
            0x3ed2e57d, 0x3f1d739f, 0x3f521e1b, 0x3f68b3b0, 0x3f271417, 0x3ea16e80, 0x3ebf853c, 0x3f25ba2a, 0x3f15effa,
            0x3e40d3b3, 0x3c181f74, 0x3e43f99e, 0x3ed84340, 0x3f20b5a9, 0x3f3dfea5, 0x3f065996, 0x3e4202e1, 0x3d51d968,
            0x3e90bc69, 0x3ec8b71e, 0x3f2902db, 0x3f516341, 0x3f29875c, 0x3ef10e98, 0x3eccf541, 0x3ecfd283, 0x3f17e21f,
            0x3f61d148, 0x3f4f0170, 0x3eb9d901, 0x3e22f630, 0x3ec56ff7, 0x3f136926, 0x3ef24555, 0x3e9ef4fb, 0x3e863968,
            0x3e850097, 0x3e82a77f, 0x3f049fba, 0x3f14318b, 0x3f3d5117, 0x3f4608dd, 0x3ef290e8, 0x3e60983b, 0x3eabfb87,
            0x3f170948, 0x3f438178, 0x3f645586, 0x3f4f6eeb, 0x3f00a98d, 0x3ec3daff, 0x3f1ce9f3, 0x3f3c90b1, 0x3ed468e5,
            0x3d863516, 0x3e20379a, 0x3ed2ee64, 0x3f02f4f6, 0x3f42db84, 0x3f2d321f, 0x3ef2fa5b, 0x3ea6ebdd, 0x3eaa916b,
            0x3ed5e20f, 0x3f1cfbfc, 0x3f4f68cd, 0x3f3d1126, 0x3f011566, 0x3ed89bef, 0x3ef55dc7, 0x3f1892f9, 0x3f53d5c6,
            0x3f6b7ed6, 0x3f1c53cf, 0x3e8b7d73, 0x3eb67363, 0x3f192290, 0x3f31381d, 0x3f62113d, 0x3f38dab0, 0x3ea888b6,
            0x3db27931, 0x3e87a5e9, 0x3f08cb62, 0x3f43dc5f, 0x3f6bf8d1, 0x3f37f923, 0x3e97489b, 0x3e5c1202, 0x3eec58e8,
            0x3f33c77c, 0x3f6ee3c5, 0x3f8160b3, 0x3f37a553, 0x3ec95d5c, 0x3eefc0f0, 0x3f3155b1, 0x3f47a14a,
        ],
    ),
    (
        (7, 4),
        &[
            0x3e967a9b, 0x3ed4c875, 0x3f063f9c, 0x3f25668a, 0x3ecba3fe, 0x3ec53ef0, 0x3ee563f9, 0x3f0dc31f, 0x3f3a53df,
            0x3ee19271, 0x3ee11515, 0x3edd51c5, 0x3f13848e, 0x3f36d73f, 0x3edbd6a4, 0x3f090f91, 0x3ef81e4f, 0x3f173367,
            0x3e9c8ef3, 0x3ee33453, 0x3f1675d6, 0x3f14942e, 0x3f145580, 0x3e9595b3, 0x3eeeb732, 0x3f126cbc, 0x3f227f40,
            0x3f1f4cba,
        ],
    ),
    (
        (16, 9),
        &[
            0xbcea00da, 0x3eaed096, 0x3f4ebf1a, 0x3d924c97, 0x3ee203c9, 0x3f6858b3, 0x3e2f8cb2, 0x3f0a9b7e, 0x3f80f927,
            0x3cea483a, 0x3ecc1528, 0x3f299712, 0x3e03af6e, 0x3f022a02, 0x3f4330ab, 0x3e6a15d4, 0x3f1bc39b, 0x3f5cca45,
            0x3e1f8832, 0x3f069a5f, 0x3e9acca3, 0x3e82f74c, 0x3f31da82, 0x3ecdffd6, 0x3eb62a7f, 0x3f4b741c, 0x3f009985,
            0x3e9e6667, 0x3f2e0ad5, 0x3cc93bd7, 0x3ed1999a, 0x3f431bf0, 0x3dff1bc2, 0x3f0285b6, 0x3f5cb58a, 0x3e65f448,
            0x3ee1999a, 0x3f5e9c5f, 0x3dd49dd8, 0x3f0a6666, 0x3ee3dd3d, 0x3e50b552, 0x3f331740, 0x3f0b8838, 0x3e9b8ddc,
            0x3f126667, 0x3f7b12f4, 0x3e988024, 0x3f2c0000, 0x3dbbce3d, 0x3ecbb357, 0x3f4f8dd5, 0x3e444d85, 0x3efee689,
            0x3f3e0669, 0x3f42f424, 0x3eddc290, 0x3f57a002, 0x3db4f867, 0x3f12814a, 0x3f176f05, 0x3e40e29a, 0x3f2c1ae3,
            0x3f66dc59, 0x3ebbc8d7, 0x3f107ae1, 0x3f803afa, 0x3e8d0dd2, 0x3f3b573b, 0x3e497d34, 0x3ec04105, 0x3f54f0d4,
            0x3f4b1157, 0x3e8432d2, 0x3f36e9bb, 0x3f64aaf1, 0x3ed9eb86, 0x3f1f8c39, 0x3db4a252, 0x3f0b649c, 0x3f3925d2,
            0x3ecc033d, 0x3ed5deb3, 0x3f66d197, 0x3eff3671, 0x3f0e8f5d, 0x3e69f200, 0x3e7da8eb, 0x3f3b4c78, 0x3ea82c33,
            0x3e378b3d, 0x3f1796f8, 0x3f65f6dc, 0x3e8ef8d2, 0x3f313092, 0x3c176c27, 0x3ed6147a, 0x3f3a71bd, 0x3ddfba52,
            0x3e94b2c8, 0x3f494350, 0x3f0b8205, 0x3ec7e5fa, 0x3f62dce9, 0x3df6a228, 0x3f0ca3d7, 0x3ebff9cd, 0x3e61b77a,
            0x3ef5d5dc, 0x3f5d8d2c, 0x3e6952cd, 0x3f148487, 0x3f7726c5, 0x3e9ecb9e, 0x3f2e3d71, 0x3d6cf948, 0x3ed1fed1,
            0x3f225b64, 0x3f1670b9, 0x3e972c43, 0x3f3bf4fd, 0x3f300a52, 0x3eedac8b, 0x3f558e97, 0x3e00440c, 0x3f106fdf,
            0x3f42eb2f, 0x3e68ffe3, 0x3ef68d43, 0x3f5c84c8, 0x3ea7b325, 0x3f176610, 0x3f761e62, 0x3e9f8306, 0x3f30ffaa,
            0x3f518d78, 0x3da8bf80, 0x3f0c6ebf, 0x3f6b2711, 0x3e3ac626, 0x3f260859, 0x3f826055, 0x3ec1d341, 0x3f3fa1f3,
        ],
    ),
    (
        (3, 17),
        &[
            0x3e61ef88, 0x3eb18aac, 0x3f163dbf, 0x3f0eb4c4, 0x3eb85f55, 0x3ea0f5b0, 0x3eb1a411, 0x3eda6c4a, 0x3f0191ac,
            0x3efe18a6, 0x3eef22ad, 0x3ee410ed, 0x3eed75c6, 0x3f0fe21d, 0x3f1d1e58, 0x3f1542e7, 0x3f10bc21, 0x3f1bbe4e,
            0x3f19ef14, 0x3f1662d3, 0x3f13e9db, 0x3f1421c2, 0x3f25a553, 0x3f35cb4e, 0x3f133e2e, 0x3ecfae95, 0x3ec76906,
            0x3ecf3f43, 0x3ec5fe9c, 0x3ec6beb9, 0x3edcd3ce, 0x3ef11e53, 0x3efe89ef, 0x3f0270be, 0x3f0a19ba, 0x3f08fe16,
            0x3f069485, 0x3f0073f8, 0x3ef58fc7, 0x3f0a65bc, 0x3f21db48, 0x3f2c1588, 0x3f275984, 0x3ef42aec, 0x3ebf7db3,
            0x3f1c1e68, 0x3f387a8c, 0x3ee6490c, 0x3e9d0aeb, 0x3ed66ae1, 0x3ef67d44,
        ],
    ),
    ((2, 2), &[0x3ef37407, 0x3ef8e3f9, 0x3f1168c3, 0x3ef6d0cc]),
];
const PIL_BICUBIC_L: &[((usize, usize), &[u8])] = &[
    ((4, 5), &[81, 95, 123, 119, 164, 171, 138, 108, 122, 122, 126, 167, 135, 86, 116, 139, 131, 152, 159, 108]),
    (
        (13, 20),
        &[
            0, 3, 44, 97, 167, 205, 133, 32, 29, 86, 144, 213, 218, 120, 43, 70, 130, 189, 243, 255, 14, 27, 73, 116,
            140, 143, 99, 46, 64, 123, 157, 171, 159, 102, 68, 108, 164, 185, 191, 195, 55, 76, 132, 154, 89, 26, 36,
            77, 130, 189, 177, 91, 48, 73, 117, 178, 223, 176, 95, 63, 95, 120, 186, 206, 108, 20, 51, 120, 144, 141,
            115, 60, 51, 114, 170, 178, 163, 126, 80, 61, 137, 161, 223, 244, 158, 79, 111, 170, 133, 44, 24, 67, 118,
            180, 206, 134, 52, 67, 117, 136, 207, 199, 183, 162, 132, 119, 170, 228, 176, 61, 43, 119, 163, 149, 122,
            83, 58, 102, 170, 197, 245, 209, 121, 65, 101, 159, 214, 255, 212, 116, 101, 165, 176, 88, 22, 51, 109,
            159, 202, 221, 133, 123, 98, 98, 162, 219, 203, 162, 146, 138, 124, 101, 79, 53, 50, 110, 172, 161, 122,
            106, 36, 57, 105, 157, 209, 232, 166, 81, 96, 165, 149, 48, 2, 49, 107, 160, 189, 134, 49, 14, 72, 99, 168,
            208, 169, 120, 102, 103, 151, 225, 207, 93, 40, 99, 147, 120, 80, 67, 67, 65, 132, 147, 188, 197, 121, 56,
            86, 150, 194, 227, 207, 128, 98, 157, 188, 106, 17, 40, 105, 131, 194, 172, 120, 83, 85, 107, 156, 207,
            188, 129, 108, 122, 152, 211, 234, 155, 70, 91, 153, 177, 224, 184, 83, 22, 68, 137, 195, 236, 183, 75, 55,
            117, 179, 237, 255, 182, 100, 119, 177, 199,
        ],
    ),
    (
        (7, 4),
        &[
            75, 106, 134, 165, 101, 98, 114, 142, 185, 112, 112, 110, 147, 182, 109, 137, 123, 151, 78, 113, 150, 148,
            148, 75, 119, 146, 162, 159,
        ],
    ),
    (
        (16, 9),
        &[
            0, 87, 206, 19, 113, 231, 44, 138, 255, 7, 101, 169, 33, 130, 194, 58, 155, 220, 39, 134, 77, 65, 177, 102,
            91, 203, 128, 78, 174, 7, 104, 194, 32, 131, 220, 58, 112, 222, 27, 138, 113, 52, 179, 139, 78, 146, 250,
            76, 171, 23, 102, 207, 49, 127, 190, 194, 110, 214, 22, 146, 151, 48, 171, 230, 93, 144, 255, 70, 187, 50,
            96, 212, 203, 66, 182, 228, 109, 159, 22, 139, 185, 101, 107, 230, 127, 142, 58, 63, 187, 84, 45, 151, 229,
            71, 176, 2, 106, 186, 28, 74, 200, 139, 99, 226, 31, 140, 96, 56, 122, 220, 58, 147, 246, 79, 174, 15, 104,
            162, 150, 75, 187, 176, 119, 213, 32, 144, 194, 58, 123, 220, 84, 151, 245, 79, 177, 208, 21, 140, 234, 47,
            165, 255, 96, 191,
        ],
    ),
    (
        (3, 17),
        &[
            59, 88, 149, 142, 92, 80, 88, 108, 129, 127, 119, 114, 119, 143, 157, 149, 144, 155, 154, 149, 147, 148,
            165, 180, 146, 103, 99, 103, 99, 99, 110, 120, 127, 130, 137, 136, 134, 128, 122, 138, 161, 171, 167, 122,
            95, 156, 184, 115, 79, 107, 123,
        ],
    ),
    ((2, 2), &[121, 124, 145, 123]),
];

/// The 7×9 plane `scripts/bicubic_reference.py` resized with PIL.
fn pil_plane() -> Vec<f32> {
    (0..63).map(|i| ((i * 37 % 101) as f64 / 100.0) as f32).collect()
}

#[test]
fn bicubic_is_bit_identical_to_pil_float_resize() {
    let src = pil_plane();
    for &((h, w), bits) in PIL_BICUBIC_F {
        let ours = resize_bicubic(&src, 7, 9, h, w).unwrap();
        let ours: Vec<u32> = ours.iter().map(|v| v.to_bits()).collect();
        assert_eq!(ours, bits, "{h}×{w}");
    }
}

#[test]
fn bicubic_of_8_bit_images_is_within_one_level_of_pil() {
    // PIL's 8-bit resize uses fixed-point weights and clamps and rounds each pass; ours is
    // float, each pass clamped (Preprocess): after rounding they differ by at most one level.
    let src: Vec<f32> = pil_plane().iter().map(|v| (v * 255.0).round() / 255.0).collect();
    let img = Image::new(1, 7, 9, src).unwrap();
    for &((h, w), pil) in PIL_BICUBIC_L {
        let pre = Preprocess::new(1, h, w, vec![0.0], vec![1.0]).unwrap();
        let ours = pre.apply(&img).unwrap();
        assert_eq!(ours, consolidator::data::resize_bicubic_clamped(&img.data, 7, 9, h, w).unwrap());
        for (k, (&a, &b)) in ours.iter().zip(pil).enumerate() {
            let a = (a * 255.0).round() as i32;
            assert!((a - b as i32).abs() <= 1, "{h}×{w} [{k}]: ours {a}, PIL {b}");
        }
    }
}

/// PIL's coefficient rule written out independently: the Keys cubic in polynomial form, C-style
/// truncation of the window bounds, normalised weights, and a direct 2-D sum in f64.
fn reference_bicubic(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    fn keys(x: f64) -> f64 {
        let a = -0.5;
        let t = x.abs();
        if t < 1.0 {
            (a + 2.0) * t.powi(3) - (a + 3.0) * t.powi(2) + 1.0
        } else if t < 2.0 {
            a * t.powi(3) - 5.0 * a * t.powi(2) + 8.0 * a * t - 4.0 * a
        } else {
            0.0
        }
    }
    fn weights(n_in: usize, n_out: usize, o: usize) -> Vec<(usize, f64)> {
        let scale = n_in as f64 / n_out as f64;
        let fs = if scale > 1.0 { scale } else { 1.0 };
        let center = (o as f64 + 0.5) * scale;
        let lo = ((center - 2.0 * fs + 0.5) as i64).max(0) as usize; // C's (int) truncates
        let hi = ((center + 2.0 * fs + 0.5) as i64).min(n_in as i64) as usize;
        let raw: Vec<(usize, f64)> = (lo..hi).map(|j| (j, keys((j as f64 + 0.5 - center) / fs))).collect();
        let total: f64 = raw.iter().map(|p| p.1).sum();
        raw.into_iter().map(|(j, v)| (j, v / total)).collect()
    }
    let mut out = Vec::new();
    for oy in 0..oh {
        let wy = weights(h, oh, oy);
        for ox in 0..ow {
            let wx = weights(w, ow, ox);
            let mut acc = 0.0;
            for &(y, a) in &wy {
                for &(x, b) in &wx {
                    acc += a * b * src[y * w + x] as f64;
                }
            }
            out.push(acc);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bicubic_matches_the_independent_reference(
        h in 1usize..20, w in 1usize..20, oh in 1usize..40, ow in 1usize..40, seed in any::<u64>()
    ) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let src: Vec<f32> = (0..h * w).map(|_| rng.gen_range(0.0..1.0)).collect();
        let ours = resize_bicubic(&src, h, w, oh, ow).unwrap();
        let reference = reference_bicubic(&src, h, w, oh, ow);
        for (k, (a, b)) in ours.iter().zip(&reference).enumerate() {
            // Ours rounds the horizontal pass to f32 (as PIL does); the reference does not.
            prop_assert!((*a as f64 - b).abs() < 1e-6, "{}×{}→{}×{} [{}]: {} vs {}", h, w, oh, ow, k, a, b);
        }
    }
}

#[test]
fn bicubic_taps_are_the_position_embedding_resampler_s() {
    // nn::checkpoint resamples pos_embed with the same taps; on a 1×n grid (vertical identity)
    // it applies exactly one horizontal pass in f64, as resize_bicubic does.
    for (n_in, n_out) in [(7, 3), (3, 7), (14, 24), (24, 14), (5, 5), (1, 4), (9, 1)] {
        let row: Vec<f32> = (0..n_in).map(|i| ((i * 7919 % 13) as f32 - 6.0) / 3.0).collect();
        let pos = Tensor::new(&[1, n_in, 1], row.clone()).unwrap();
        let theirs = consolidator::nn::resample_pos_embed(&pos, (1, n_in), (1, n_out), 0).unwrap();
        let ours = resize_bicubic(&row, 1, n_in, 1, n_out).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ours), bits(theirs.data()), "{n_in}→{n_out}");
        // The taps themselves: windows inside the input, weights summing to 1.
        for (lo, ws) in bicubic_taps(n_in, n_out) {
            assert!(lo + ws.len() <= n_in);
            assert!((ws.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Preprocess

#[test]
fn preprocess_is_bit_identical_to_dataset_normalize() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let images = Tensor::new(&[37, 1, 28, 28], (0..37 * 784).map(|_| rng.gen_range(0.0..1.0)).collect()).unwrap();
    let labels: Vec<usize> = (0..37).map(|i| i % 10).collect();
    let ds = Dataset::new(images, labels, 10).unwrap();
    let mut normalised = ds.clone();
    normalised.normalize(0.1307, 0.3081).unwrap();
    let pre = Preprocess::mnist();
    let all: Vec<usize> = (0..37).collect();
    let (x, y) = pre.batch(&ds, &all).unwrap();
    assert_eq!(x.shape(), normalised.images.shape());
    assert!(x.data().iter().zip(normalised.images.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(y, normalised.labels);
    // The same batches, in the same shuffled order, as Dataset::batches.
    let ours: Vec<_> = pre.batches(&ds, 8, Some(5), false).map(|b| b.unwrap()).collect();
    let theirs: Vec<_> = normalised.batches(8, Some(5), false).collect();
    assert_eq!(ours.len(), theirs.len());
    for ((xa, ya), (xb, yb)) in ours.iter().zip(&theirs) {
        assert_eq!(ya, yb);
        assert!(xa.data().iter().zip(xb.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    assert_eq!(pre.batches(&ds, 8, None, true).len(), 4);
    let m = pre.materialize(&ds).unwrap();
    assert_eq!(m, normalised);
}

#[test]
fn preprocess_converts_channels_resizes_and_normalises() {
    let gray = Image::new(1, 2, 2, vec![0.0, 0.25, 0.5, 1.0]).unwrap();
    let pre = Preprocess::new(3, 2, 2, vec![0.5, 0.0, 0.25], vec![0.5, 1.0, 0.25]).unwrap();
    let out = pre.apply(&gray).unwrap();
    assert_eq!(out, vec![-1.0, -0.5, 0.0, 1.0, 0.0, 0.25, 0.5, 1.0, -1.0, 0.0, 1.0, 3.0]);
    let rgb = Image::new(3, 1, 1, vec![1.0, 0.5, 0.0]).unwrap();
    let to_gray = Preprocess::new(1, 1, 1, vec![0.0], vec![1.0]).unwrap();
    assert_eq!(to_gray.apply(&rgb).unwrap(), vec![0.299 + 0.587 * 0.5]);
    // RGBA drops alpha; the bicubic overshoot of a hard edge is clamped to [0, 1].
    let mut edge = vec![0.0f32; 4 * 8 * 8];
    for y in 0..8 {
        for x in 4..8 {
            for c in 0..3 {
                edge[c * 64 + y * 8 + x] = 1.0;
            }
        }
    }
    let rgba = Image::new(4, 8, 8, edge.clone()).unwrap();
    let up = Preprocess::new(3, 16, 13, vec![0.0], vec![1.0]).unwrap().apply(&rgba).unwrap();
    assert_eq!(up.len(), 3 * 16 * 13);
    assert!(up.iter().all(|v| (0.0..=1.0).contains(v)));
    let unclamped = Image::new(4, 8, 8, edge).unwrap().to_channels(3).unwrap().resize_bicubic(16, 13).unwrap();
    assert!(
        unclamped.data.iter().any(|&v| v > 1.0) && unclamped.data.iter().any(|&v| v < 0.0),
        "no overshoot to clamp"
    );
    // The ImageNet preset.
    let p = Preprocess::imagenet(224, 160);
    assert_eq!((p.image_shape(), p.mean.len(), p.std[2]), ([3, 224, 160], 3, 0.225));
}

#[test]
fn preprocess_validation() {
    let ok = Preprocess::mnist();
    ok.validate().unwrap();
    for (bad, needle) in [
        (Preprocess { std: vec![0.0], ..ok.clone() }, "std"),
        (Preprocess { std: vec![f32::INFINITY], ..ok.clone() }, "std"),
        (Preprocess { mean: vec![f32::NAN], ..ok.clone() }, "mean"),
        (Preprocess { mean: vec![0.1, 0.2], ..ok.clone() }, "mean has 2 values"),
        (Preprocess { channels: 2, ..ok.clone() }, "1 or 3 channels"),
        (Preprocess { height: 0, ..ok.clone() }, "positive"),
        (Preprocess { width: 1 << 40, ..ok.clone() }, "too large"),
    ] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
        assert!(bad.apply(&Image::new(1, 1, 1, vec![0.0]).unwrap()).is_err());
    }
    let ds = Dataset::new(Tensor::zeros(&[2, 1, 28, 28]), vec![0, 1], 2).unwrap();
    assert!(err_string(ok.batch(&ds, &[0, 2])).contains("out of range"));
}

#[test]
fn batches_do_not_depend_on_the_thread_count() {
    let dir = temp_dir("threads");
    for i in 0..24 {
        let (w, h) = (5 + i % 7, 4 + i % 5);
        let samples: Vec<u32> = (0..w * h * 3).map(|k| ((k * 31 + i * 7) % 256) as u32).collect();
        write(&dir.join(format!("c{}/{i:02}.ppm", i % 3)), &ppm_ascii(w, h, 255, &samples));
    }
    let folder = ImageFolder::open(&dir).unwrap();
    let pre = Preprocess::imagenet(9, 11);
    let idx: Vec<usize> = (0..24).rev().collect();
    consolidator::par::set_threads(1);
    let (a, la) = pre.batch(&folder, &idx).unwrap();
    consolidator::par::set_threads(2);
    let (b, lb) = pre.batch(&folder, &idx).unwrap();
    assert_eq!(la, lb);
    assert!(a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[test]
fn pgm_and_ppm_in_every_variant() {
    // P5 8-bit, P5 16-bit, P2 with comments, P3, P6 16-bit.
    let img = decode_image(&pgm(3, 1, 255, &[0, 51, 255]), "a.pgm").unwrap();
    assert_eq!((img.channels, img.height, img.width, img.data.clone()), (1, 1, 3, vec![0.0, 0.2, 1.0]));
    let img = decode_image(&pgm(2, 1, 65535, &[65535, 257]), "b.pgm").unwrap();
    assert_eq!(img.data, vec![1.0, 257.0 / 65535.0]);
    let img = decode_image(b"P2 # width next\n2 # height\n 1\n# maxval\n10\n10 5", "c.pgm").unwrap();
    assert_eq!(img.data, vec![1.0, 0.5]);
    let img = decode_image(&ppm_ascii(2, 1, 4, &[4, 0, 2, 0, 4, 1]), "d.ppm").unwrap();
    assert_eq!((img.channels, img.data.clone()), (3, vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.25]));
    let mut p6 = b"P6\n1 1\n1000\n".to_vec();
    for v in [1000u16, 500, 0] {
        p6.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(decode_image(&p6, "e.ppm").unwrap().data, vec![1.0, 0.5, 0.0]);
}

#[test]
fn bad_pgm_and_ppm_are_clear_errors() {
    for (bytes, needle) in [
        (pgm(2, 2, 255, &[1, 2, 3]), "truncated"),
        (b"P2 2 1 10 3 11".to_vec(), "above the maxval"),
        (b"P2 2 1 10 3".to_vec(), "truncated"),
        (b"P5 2 1 0 \x00\x00".to_vec(), "maxval 0"),
        (b"P5 2 1 70000 \x00\x00".to_vec(), "maxval 70000"),
        (b"P1 1 1 1".to_vec(), "PBM"),
        (b"P7\nWIDTH 1".to_vec(), "PAM"),
        (b"P5 x 1 255 ".to_vec(), "width"),
        (b"P5 1 1 255".to_vec(), "whitespace"),
        (b"P51 1 255 a".to_vec(), "whitespace"),
        (b"P5 99999999999999 1 255 ".to_vec(), "too large"),
        // 65536 × 65536 declared by a 20-byte file: refused from the header.
        (b"P5 65536 65536 255 ".to_vec(), "limit"),
        // Within the pixel limit, but the file cannot hold that many samples: no allocation.
        (b"P2 8000 8000 255 1 2 3".to_vec(), "cannot fit"),
        (b"GIF89a".to_vec(), "not a PNG, JPEG, PGM or PPM"),
        (Vec::new(), "starts with nothing"),
    ] {
        let e = err_string(decode_image(&bytes, "bad.pgm"));
        assert!(e.contains(needle) && e.contains("bad.pgm"), "{:?}: {e}", String::from_utf8_lossy(&bytes));
    }
    // A smaller limit for fuzzing.
    assert!(decode_image_with_limit(&pgm(4, 4, 255, &[0; 16]), "x", 15).is_err());
    assert!(decode_image_with_limit(&pgm(4, 4, 255, &[0; 16]), "x", 16).is_ok());
    assert_eq!(MAX_PIXELS, 1 << 26);
}

#[cfg(feature = "image")]
mod codecs {
    use super::*;

    pub fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        png_with(w, h, color, depth, data, |_| {})
    }

    pub fn png_with(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        edit: impl FnOnce(&mut png::Encoder<&mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut buf, w, h);
            enc.set_color(color);
            enc.set_depth(depth);
            edit(&mut enc);
            let mut writer = enc.write_header().unwrap();
            writer.write_image_data(data).unwrap();
        }
        buf
    }

    pub fn jpeg(w: u16, h: u16, color: jpeg_encoder::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 100).encode(data, w, h, color).unwrap();
        out
    }

    #[test]
    fn png_colour_types_and_depths() {
        use png::{BitDepth::*, ColorType::*};
        let g = decode_image(&png(2, 1, Grayscale, Eight, &[0, 255]), "g.png").unwrap();
        assert_eq!((g.channels, g.data.clone()), (1, vec![0.0, 1.0]));
        // 16-bit RGB: big-endian samples scaled by 65535, exactly.
        let mut d = Vec::new();
        for v in [65535u16, 0, 32768, 1, 2, 3] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        let rgb16 = decode_image(&png(2, 1, Rgb, Sixteen, &d), "rgb16.png").unwrap();
        assert_eq!(rgb16.channels, 3);
        assert_eq!(rgb16.data, vec![1.0, 1.0 / 65535.0, 0.0, 2.0 / 65535.0, 32768.0 / 65535.0, 3.0 / 65535.0]);
        let g16 = decode_image(&png(1, 1, Grayscale, Sixteen, &[0x12, 0x34]), "g16.png").unwrap();
        assert_eq!(g16.data, vec![0x1234 as f32 / 65535.0]);
        let rgba = decode_image(&png(1, 1, Rgba, Eight, &[255, 0, 51, 128]), "rgba.png").unwrap();
        assert_eq!((rgba.channels, rgba.data.clone()), (4, vec![1.0, 0.0, 0.2, 128.0 / 255.0]));
        let la = decode_image(&png(1, 1, GrayscaleAlpha, Eight, &[51, 255]), "la.png").unwrap();
        assert_eq!((la.channels, la.data.clone()), (2, vec![0.2, 1.0]));
        // 1-bit gray is expanded to 8 bits; a palette to RGB.
        let bits = decode_image(&png(8, 1, Grayscale, One, &[0b1010_0000]), "bits.png").unwrap();
        assert_eq!(bits.data, vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let pal = png_with(2, 1, Indexed, Eight, &[1, 0], |e| e.set_palette(vec![10, 20, 30, 255, 0, 51]));
        let pal = decode_image(&pal, "pal.png").unwrap();
        assert_eq!(
            (pal.channels, pal.data.clone()),
            (3, vec![1.0, 10.0 / 255.0, 0.0, 20.0 / 255.0, 0.2, 30.0 / 255.0])
        );
    }

    #[test]
    fn jpeg_gray_and_rgb() {
        let (w, h) = (24u16, 16u16);
        let gray: Vec<u8> = (0..w as usize * h as usize).map(|i| (i % 24 * 10) as u8).collect();
        let g = decode_image(&jpeg(w, h, jpeg_encoder::ColorType::Luma, &gray), "g.jpg").unwrap();
        assert_eq!((g.channels, g.height, g.width), (1, 16, 24));
        let err = g.data.iter().zip(&gray).map(|(a, &b)| (a * 255.0 - b as f32).abs()).fold(0.0, f32::max);
        assert!(err <= 4.0, "gray JPEG off by {err} levels");
        let rgb: Vec<u8> =
            (0..w as usize * h as usize).flat_map(|i| [(i % 24 * 10) as u8, 128, 255 - (i / 24 * 15) as u8]).collect();
        let c = decode_image(&jpeg(w, h, jpeg_encoder::ColorType::Rgb, &rgb), "c.jpg").unwrap();
        assert_eq!((c.channels, c.height, c.width), (3, 16, 24));
        let n = 24 * 16;
        let mut worst = 0.0f32;
        for p in 0..n {
            for ch in 0..3 {
                worst = worst.max((c.data[ch * n + p] * 255.0 - rgb[p * 3 + ch] as f32).abs());
            }
        }
        assert!(worst <= 8.0, "RGB JPEG off by {worst} levels");
    }

    #[test]
    fn truncated_and_corrupt_png_and_jpeg_are_errors() {
        let data: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let p = png(64, 48, png::ColorType::Rgb, png::BitDepth::Eight, &data);
        // Cut anywhere before the end of the pixel data (a file missing only its final IEND
        // chunk holds every pixel and decodes).
        for cut in [8, 20, 40, p.len() / 2, p.len() - 13] {
            let e = err_string(decode_image(&p[..cut], "cut.png"));
            assert!(e.contains("cut.png") && e.contains("PNG"), "{cut}: {e}");
        }
        let mut flipped = p.clone();
        flipped[p.len() / 2] ^= 0x55; // inside IDAT: the CRC catches it
        assert!(decode_image(&flipped, "flip.png").is_err());
        let j = jpeg(64, 48, jpeg_encoder::ColorType::Rgb, &data);
        for cut in [3, 30, j.len() / 3, j.len() / 2, j.len() - 40, j.len() - 1] {
            let e = match decode_image(&j[..cut], "cut.jpg") {
                Ok(_) => panic!("a JPEG cut at {cut} of {} decoded", j.len()),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("cut.jpg") && e.contains("JPEG"), "{cut}: {e}");
        }
    }

    #[test]
    fn huge_declared_png_is_refused_before_decoding() {
        let p = png(1, 1, png::ColorType::Rgba, png::BitDepth::Sixteen, &[0; 8]);
        // Rewrite IHDR's width and height (bytes 16..24) and fix its CRC.
        let with_size = |w: u32, h: u32| {
            let mut b = p.clone();
            b[16..20].copy_from_slice(&w.to_be_bytes());
            b[20..24].copy_from_slice(&h.to_be_bytes());
            let crc = crc32(&b[12..29]); // chunk type + data
            b[29..33].copy_from_slice(&crc.to_be_bytes());
            b
        };
        let e = err_string(decode_image(&with_size(100_000, 100_000), "huge.png"));
        assert!(e.contains("limit") && e.contains("huge.png"), "{e}");
        // Within the pixel limit, but a 70-byte file cannot hold 8000×8000 RGBA16 pixels.
        let e = err_string(decode_image(&with_size(8000, 8000), "big.png"));
        assert!(e.contains("can hold"), "{e}");
    }

    /// CRC-32 (IEEE), bit by bit.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn a_folder_of_mixed_images() {
        use png::{BitDepth::*, ColorType::*};
        let dir = temp_dir("mixed");
        write(&dir.join("bird/a.PNG"), &png(3, 2, Grayscale, Eight, &[0, 50, 100, 150, 200, 250]));
        write(&dir.join("bird/b.png"), &png(2, 2, Rgb, Sixteen, &[0x80; 24]));
        write(&dir.join("bird/nested/c.Jpeg"), &jpeg(9, 5, jpeg_encoder::ColorType::Rgb, &[90; 9 * 5 * 3]));
        write(&dir.join("bird/notes.txt"), b"not an image");
        write(&dir.join("cat/d.pgm"), &pgm(4, 4, 65535, &[65535; 16]));
        write(&dir.join("cat/e.ppm"), &ppm_ascii(1, 1, 255, &[255, 0, 0]));
        write(&dir.join("cat/f.jpg"), &jpeg(7, 3, jpeg_encoder::ColorType::Luma, &[200; 21]));
        write(&dir.join("cat/g.png"), &png(1, 1, Rgba, Eight, &[0, 0, 255, 0]));
        write(&dir.join(".hidden/h.png"), &png(1, 1, Grayscale, Eight, &[0]));
        let f = ImageFolder::open(&dir).unwrap();
        assert_eq!(f.class_names(), vec!["bird", "cat"]);
        let names: Vec<String> =
            f.files().iter().map(|(p, _)| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(
            names,
            ["bird/a.PNG", "bird/b.png", "bird/nested/c.Jpeg", "cat/d.pgm", "cat/e.ppm", "cat/f.jpg", "cat/g.png"]
        );
        assert_eq!(labels(&f), vec![0, 0, 0, 1, 1, 1, 1]);
        // Every one into a 3×8×8 batch.
        let (x, y) = Preprocess::imagenet(8, 8).batch(&f, &(0..7).collect::<Vec<_>>()).unwrap();
        assert_eq!((x.shape(), y.len()), (&[7, 3, 8, 8][..], 7));
        assert!(x.all_finite());
        // And into gray.
        let (x, _) = Preprocess::new(1, 5, 5, vec![0.0], vec![1.0]).unwrap().batch(&f, &[4, 6]).unwrap();
        let red = &x.data()[..25];
        assert!(red.iter().all(|&v| (v - 0.299).abs() < 1e-6), "{red:?}"); // luma of pure red
        assert!(x.data()[25..].iter().all(|&v| (v - 0.114).abs() < 1e-6)); // blue (alpha dropped)
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_file_is_named_when_it_is_decoded() {
        let dir = temp_dir("broken");
        let good = png(2, 2, png::ColorType::Grayscale, png::BitDepth::Eight, &[1, 2, 3, 4]);
        for i in 0..5 {
            write(&dir.join(format!("a/{i}.png")), &good);
            write(&dir.join(format!("b/{i}.png")), &good);
        }
        let j = jpeg(16, 16, jpeg_encoder::ColorType::Rgb, &[7; 16 * 16 * 3]);
        write(&dir.join("a/2.png"), &good[..good.len() - 20]); // truncated
        write(&dir.join("b/3.png"), &j[..j.len() / 2]); // a truncated JPEG behind a .png name
        write(&dir.join("b/4.png"), b"<html>not found</html>");
        // Opening lists the files without decoding them.
        let f = ImageFolder::open(&dir).unwrap();
        let pre = Preprocess::new(1, 2, 2, vec![0.0], vec![1.0]).unwrap();
        pre.batch(&f, &[0, 1, 3, 4, 5, 6, 7]).unwrap(); // the good ones
        let e = err_string(pre.batch(&f, &[0, 9, 2]));
        assert!(e.contains(&dir.join("b/4.png").display().to_string()) && e.contains("not a PNG"), "{e}");
        let e = err_string(pre.batch(&f, &[8]));
        assert!(e.contains("b/3.png") && e.contains("JPEG"), "{e}");
        let e = err_string(pre.batch(&f, &[2]));
        assert!(e.contains("a/2.png") && e.contains("PNG"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Image folders

#[test]
fn folder_errors() {
    let dir = temp_dir("folder-errors");
    // Not a directory / missing.
    write(&dir.join("file.pgm"), &pgm(1, 1, 255, &[0]));
    let e = err_string(ImageFolder::open(&dir.join("file.pgm")));
    assert!(e.contains("not a directory") && e.contains("file.pgm"), "{e}");
    assert!(matches!(ImageFolder::open(&dir.join("missing")), Err(Error::Io { .. })));
    // Images lying directly in the folder: no class folders, with a hint.
    let e = err_string(ImageFolder::open(&dir));
    assert!(e.contains("no class folders") && e.contains("one folder per class"), "{e}");
    // A single class.
    write(&dir.join("only/a.pgm"), &pgm(1, 1, 255, &[0]));
    let e = err_string(ImageFolder::open(&dir));
    assert!(e.contains("only one class") && e.contains("`only`"), "{e}");
    // An empty class folder (files without image extensions do not count).
    write(&dir.join("empty/readme.txt"), b"x");
    let e = err_string(ImageFolder::open(&dir));
    assert!(e.contains("holds no images") && e.contains("empty"), "{e}");
    // The same through open(), and a directory with nothing at all.
    let e = err_string(open(&dir));
    assert!(e.contains("holds no images"), "{e}");
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let e = err_string(open(&bare));
    assert!(e.contains("looked for IDX files") && e.contains("split folders") && e.contains("class folders"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_named_pipe_in_a_class_folder_is_skipped() {
    let dir = temp_dir("fifo");
    write(&dir.join("a/1.pgm"), &pgm(1, 1, 255, &[0]));
    write(&dir.join("b/1.pgm"), &pgm(1, 1, 255, &[9]));
    let ok = std::process::Command::new("mkfifo").arg(dir.join("b/2.pgm")).status().is_ok_and(|s| s.success());
    let f = ImageFolder::open(&dir).unwrap();
    assert_eq!(f.len(), 2, "fifo made: {ok}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn split_folders_share_their_classes() {
    let dir = temp_dir("splits");
    for (split, class, n) in
        [("train", "ant", 3), ("train", "bee", 2), ("val", "bee", 1), ("test", "cow", 2), ("test", "ant", 1)]
    {
        for i in 0..n {
            write(&dir.join(format!("{split}/{class}/{i}.pgm")), &pgm(2, 2, 255, &[i as u32; 4]));
        }
    }
    let data = open(&dir).unwrap();
    assert_eq!(data.kind, DataKind::SplitImageFolders);
    assert_eq!(data.names(), vec!["test", "train", "val"]);
    let train = data.split("train").unwrap();
    let test = data.split("test").unwrap();
    assert_eq!(train.class_names(), vec!["ant", "bee", "cow"]);
    assert_eq!((train.num_classes(), test.num_classes()), (3, 3));
    assert_eq!(labels(train.as_ref()), vec![0, 0, 0, 1, 1]);
    assert_eq!(labels(test.as_ref()), vec![0, 2, 2]);
    assert_eq!(labels(data.split("val").unwrap().as_ref()), vec![1]);
    let (t, v) = data.train_val(0.5, 0).unwrap();
    assert_eq!((t.len(), v.unwrap().len()), (5, 1), "the val folder wins over a split");
    assert!(err_string(data.single()).contains("several splits"));
    assert!(err_string(data.split("all")).contains("has: test, train, val"));
    // A class folder beside the split folders is refused.
    write(&dir.join("dog/0.pgm"), &pgm(1, 1, 255, &[0]));
    let e = err_string(open(&dir));
    assert!(e.contains("`dog`") && e.contains("split folders"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_source_over_many_files_decodes_only_what_a_batch_asks_for() {
    let dir = temp_dir("lazy");
    for i in 0..2000 {
        write(&dir.join(format!("c{}/{i:04}.pgm", i % 4)), &pgm(3, 2, 255, &[i as u32 % 256; 6]));
    }
    // A file that would fail to decode costs nothing until it is asked for.
    write(&dir.join("c0/zzzz.pgm"), b"garbage");
    let t = std::time::Instant::now();
    let src = Arc::new(Counting { inner: ImageFolder::open(&dir).unwrap(), decoded: AtomicUsize::new(0) });
    assert_eq!(src.len(), 2001);
    assert_eq!(src.decoded.load(Ordering::SeqCst), 0, "opening decoded images");
    let pre = Preprocess::new(1, 2, 3, vec![0.0], vec![1.0]).unwrap();
    let (x, _) = pre.batch(src.as_ref(), &[5, 1999, 0, 1234, 7, 8, 9, 10]).unwrap();
    assert_eq!(src.decoded.load(Ordering::SeqCst), 8);
    assert_eq!(x.shape(), &[8, 1, 2, 3]);
    // Through a Subset, a validation split and its batches.
    let (train, val) = consolidator::data::split_source(src.clone(), 0.1, 3).unwrap();
    assert_eq!((train.len(), val.len()), (1801, 200));
    let first = pre.batches(&val, 16, None, false).next().unwrap().unwrap();
    assert_eq!(first.0.shape()[0], 16);
    assert_eq!(src.decoded.load(Ordering::SeqCst), 24);
    assert!(t.elapsed().as_secs() < 30);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tensor files

#[test]
fn tensor_files_in_every_layout() {
    // u8 NHWC (inferred from the trailing 3), I64 labels, JSON class names.
    let n = 4;
    let pixels: Vec<u8> = (0..n * 2 * 2 * 3).map(|i| (i * 5) as u8).collect();
    let bytes = safetensors(
        &[("images", "U8", &[n, 2, 2, 3], pixels.clone()), ("labels", "I64", &[n], i64s(&[2, 0, 1, 2]))],
        &[("class_names", r#"["airplane","bird","car"]"#)],
    );
    let s = open_tensor_file(&bytes, "u8.safetensors").unwrap();
    let all = &s["all"];
    assert_eq!((all.layout(), all.image_shape(), all.dtype().name()), (Layout::Nhwc, [3, 2, 2], "U8"));
    assert_eq!(
        (all.len(), all.num_classes(), all.class_names()),
        (4, 3, vec!["airplane".to_string(), "bird".into(), "car".into()])
    );
    assert_eq!(labels(all), vec![2, 0, 1, 2]);
    let img = all.image(1).unwrap();
    // CHW from HWC: channel 0 of image 1 = bytes 12, 15, 18, 21.
    let expect: Vec<f32> =
        [12, 15, 18, 21, 13, 16, 19, 22, 14, 17, 20, 23].iter().map(|&k| pixels[k] as f32 / 255.0).collect();
    assert_eq!(img.data, expect);
    assert!(all.describe(3).contains("u8.safetensors") && all.describe(3).contains("example 3"));
    // f32 NCHW (inferred from the 1), comma-separated names, U8 labels.
    let bytes = safetensors(
        &[
            ("images", "F32", &[2, 1, 3, 2], f32s(&[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5])),
            ("labels", "U8", &[2], vec![1, 0]),
        ],
        &[("class_names", "zero, one")],
    );
    let s = open_tensor_file(&bytes, "f32").unwrap();
    assert_eq!(s["all"].layout(), Layout::Nchw);
    assert_eq!(s["all"].class_names(), vec!["zero", "one"]);
    assert_eq!(s["all"].image(1).unwrap().data, vec![1.0, 0.9, 0.8, 0.7, 0.6, 0.5]);
    // NHW, and an explicit layout resolving an ambiguous shape.
    let bytes = safetensors(
        &[("images", "U8", &[2, 3, 3], vec![255; 18]), ("labels", "I32", &[2], vec![0, 0, 0, 0, 1, 0, 0, 0])],
        &[],
    );
    let s = open_tensor_file(&bytes, "nhw").unwrap();
    assert_eq!((s["all"].layout(), s["all"].image_shape(), s["all"].num_classes()), (Layout::Nhw, [1, 3, 3], 2));
    let amb = |meta: &[(&str, &str)]| {
        safetensors(&[("images", "U8", &[2, 3, 4, 3], vec![0; 72]), ("labels", "I16", &[2], vec![0, 0, 1, 0])], meta)
    };
    let e = err_string(open_tensor_file(&amb(&[]), "amb.safetensors"));
    assert!(e.contains("ambiguous") && e.contains("layout") && e.contains("amb.safetensors"), "{e}");
    let s = open_tensor_file(&amb(&[("layout", "nchw")]), "amb").unwrap();
    assert_eq!(s["all"].image_shape(), [3, 4, 3]);
    let s = open_tensor_file(&amb(&[("layout", "NHWC")]), "amb").unwrap();
    assert_eq!(s["all"].image_shape(), [3, 3, 4]);
    // What our own writer produces (F32 images and F32 labels) reads back, splits included.
    let ds = Dataset::new(Tensor::full(&[3, 1, 4, 4], 0.5), vec![2, 0, 1], 3).unwrap();
    let names = vec!["a".to_string(), "b, with a comma".into(), "\"c\"".into()];
    let bytes = consolidator::data::to_tensor_file(&ds, &names).unwrap().to_bytes_checked().unwrap();
    let written = open_tensor_file(&bytes, "written").unwrap();
    let back = &written["all"];
    assert_eq!((back.class_names(), labels(back), back.image_shape()), (names, vec![2, 0, 1], [1, 4, 4]));
    assert_eq!(Preprocess::new(1, 4, 4, vec![0.0], vec![1.0]).unwrap().materialize(back).unwrap(), ds);
    assert!(consolidator::data::to_tensor_file(&ds, &["x".to_string()]).is_err());
    let mut f = TensorFile::new();
    f.metadata.insert("layout".into(), "NCHW".into()); // [N, 1, 4, 4] alone is ambiguous
    f.insert("train.images", Tensor::full(&[3, 1, 4, 4], 0.25));
    f.insert("train.labels", Tensor::new(&[3], vec![0.0, 1.0, 1.0]).unwrap());
    f.insert("test.images", Tensor::full(&[2, 1, 4, 4], 0.75));
    f.insert("test.labels", Tensor::new(&[2, 1], vec![1.0, 0.0]).unwrap());
    let dir = temp_dir("tensor-splits");
    f.save(dir.join("d.safetensors")).unwrap();
    let data = open(&dir.join("d.safetensors")).unwrap();
    assert_eq!((data.kind, data.names()), (DataKind::TensorFile, vec!["test", "train"]));
    let test = data.split("test").unwrap();
    assert_eq!((test.len(), test.label(0), test.image(1).unwrap().data[0]), (2, 1, 0.75));
    let (train, val) = data.train_val(0.0, 0).unwrap();
    assert!(val.is_none());
    assert_eq!(train.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_tensor_files() {
    fn img(shape: &[usize]) -> (&'static str, &'static str, &[usize], Vec<u8>) {
        ("images", "U8", shape, vec![0u8; shape.iter().product()])
    }
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (safetensors(&[("pixels", "U8", &[2, 2, 2], vec![0; 8])], &[]), "no `images` and `labels`"),
        (safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8])], &[]), "no `labels`"),
        (safetensors(&[("labels", "I64", &[2], i64s(&[0, 1]))], &[]), "no `images`"),
        (
            safetensors(&[("images", "U8", &[2, 5, 5, 5], vec![0; 250]), ("labels", "I64", &[2], i64s(&[0, 1]))], &[]),
            "no channel axis",
        ),
        (
            safetensors(&[("images", "U8", &[2, 2], vec![0; 4]), ("labels", "I64", &[2], i64s(&[0, 1]))], &[]),
            "is not [N, H, W]",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1]))],
                &[("layout", "NWHC")],
            ),
            "expected NHW, NHWC or NCHW",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1]))],
                &[("layout", "NCHW")],
            ),
            "which is not Nchw",
        ),
        (
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[3], i64s(&[0, 1, 1]))], &[]),
            "2 images but there are 3 labels",
        ),
        (
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, -1]))], &[]),
            "negative",
        ),
        (
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "F32", &[2], f32s(&[0.0, 1.5]))], &[]),
            "not a whole number",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "F32", &[2], f32s(&[0.0, f32::NAN]))],
                &[],
            ),
            "not a whole number",
        ),
        (safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "BOOL", &[2], vec![0, 1])], &[]), "BOOL"),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2, 2], i64s(&[0, 1, 0, 1]))],
                &[],
            ),
            "expected [N]",
        ),
        (
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1 << 40]))], &[]),
            "class limit",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 5]))],
                &[("class_names", "[\"a\",\"b\"]")],
            ),
            "label 5 is out of range for 2 classes",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1]))],
                &[("class_names", "[\"a\",\"a\"]")],
            ),
            "appears twice",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1]))],
                &[("class_names", "[\"a\",3]")],
            ),
            "not a string",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1]))],
                &[("class_names", "a,,b")],
            ),
            "empty",
        ),
        (
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 1]))],
                &[("num_classes", "1e9")],
            ),
            "num_classes",
        ),
        (
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 0]))], &[]),
            "at least 2 classes",
        ),
        (
            safetensors(
                &[("images", "F32", &[1, 1, 2], f32s(&[0.5, -0.42])), ("labels", "I64", &[1], i64s(&[1]))],
                &[],
            ),
            "outside [0, 1]",
        ),
        (
            safetensors(&[("images", "F32", &[1, 1, 1], f32s(&[f32::NAN])), ("labels", "I64", &[1], i64s(&[1]))], &[]),
            "outside [0, 1]",
        ),
        (
            safetensors(&[("images", "I32", &[1, 1, 1], vec![0; 4]), ("labels", "I64", &[1], i64s(&[1]))], &[]),
            "images must be U8",
        ),
        (
            safetensors(
                &[("images", "U8", &[0, 2, 2], vec![]), ("labels", "I64", &[0], vec![])],
                &[("num_classes", "2")],
            ),
            "holds no image",
        ),
        (safetensors(&[img(&[1, 1, 1]), ("labels", "I64", &[1], i64s(&[1]))], &[("layout", "\u{1b}[2J")]), "\\x1b[2J"),
    ];
    for (bytes, needle) in cases {
        let e = match open_tensor_file(&bytes, "bad.safetensors") {
            Ok(_) => panic!("accepted; wanted {needle:?}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle) && e.contains("bad.safetensors"), "wanted {needle:?}: {e}");
    }
    // num_classes metadata widens the classes; it must agree with the names.
    let ok = safetensors(&[img(&[2, 1, 1]), ("labels", "I64", &[2], i64s(&[0, 0]))], &[("num_classes", "10")]);
    assert_eq!(open_tensor_file(&ok, "ok").unwrap()["all"].num_classes(), 10);
    let both = safetensors(
        &[img(&[2, 1, 1]), ("labels", "I64", &[2], i64s(&[0, 1]))],
        &[("num_classes", "3"), ("class_names", "a,b")],
    );
    assert!(err_string(open_tensor_file(&both, "x")).contains("2 class names but `num_classes` = 3"));
}

// ---------------------------------------------------------------------------------------------
// IDX directories, optdigits, the shipped data

fn idx(magic: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, magic];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn idx_directories() {
    let dir = temp_dir("idx");
    write(
        &dir.join("train-images-idx3-ubyte.gz"),
        &gzip(&idx(3, &[3, 2, 2], &[0, 255, 51, 0, 1, 2, 3, 4, 5, 6, 7, 8])),
    );
    write(&dir.join("train-labels-idx1-ubyte"), &idx(1, &[3], &[4, 0, 1]));
    write(&dir.join("t10k-images-idx3-ubyte"), &idx(3, &[1, 2, 2], &[9; 4]));
    write(&dir.join("t10k-labels-idx1-ubyte.gz"), &gzip(&idx(1, &[1], &[2])));
    let data = open(&dir).unwrap();
    assert_eq!((data.kind, data.names()), (DataKind::Idx, vec!["test", "train"]));
    let train = data.split("train").unwrap();
    assert_eq!((train.len(), train.num_classes(), labels(train.as_ref())), (3, 5, vec![4, 0, 1]));
    assert_eq!(train.image(0).unwrap().data, vec![0.0, 1.0, 0.2, 0.0]);
    assert_eq!(data.split("test").unwrap().num_classes(), 5);
    // A missing partner, and a count mismatch.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert!(err_string(open(&dir)).contains("come in pairs"));
    write(&dir.join("t10k-labels-idx1-ubyte"), &idx(1, &[2], &[2, 2]));
    assert!(err_string(open(&dir)).contains("holds 1 images but"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idx_gzip_bombs_are_refused_after_inflating_what_the_header_declares() {
    // Declares 100 label bytes, inflates to 256 MiB of zeros (a 250 KB file).
    let dir = temp_dir("bomb");
    let path = dir.join("train-labels-idx1-ubyte.gz");
    {
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        e.write_all(&idx(1, &[100], &[])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap();
    }
    assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20);
    let t = std::time::Instant::now();
    let e = err_string(Idx::load_labels(&path));
    assert!(e.contains("trailing data") && e.contains("train-labels-idx1-ubyte.gz"), "{e}");
    assert!(t.elapsed().as_millis() < 500, "inflated too much: {:?}", t.elapsed());
    // A header declaring more than the limit is refused before inflating anything.
    let e = err_string(Idx::parse(&gzip(&idx(3, &[60_000, 1000, 1000], &[])), "big.gz"));
    assert!(e.contains("limit"), "{e}");
    let e = err_string(Idx::parse_with_limit(&gzip(&idx(1, &[100], &[0; 100])), "small-limit.gz", 99));
    assert!(e.contains("99-byte limit"), "{e}");
    // A plain file whose header lies about its length is refused before reading its data.
    let plain = dir.join("t10k-images-idx3-ubyte");
    write(&plain, &idx(3, &[1000, 28, 28], &[0; 100]));
    assert!(err_string(Idx::load_images(&plain)).contains("truncated"));
    // Not a regular file.
    assert!(err_string(Idx::load_images(&dir)).contains("not a regular file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[test]
fn the_shipped_data_through_open() {
    let mnist = open(&shipped().join("mnist")).unwrap();
    assert_eq!((mnist.kind, mnist.names()), (DataKind::Idx, vec!["test"]));
    let test = mnist.single().unwrap();
    assert_eq!((test.len(), test.num_classes()), (10_000, 10));
    assert!(test.class_names().is_empty());
    // Bit-identical to the in-memory loader, preprocessed or not.
    let ds = consolidator::data::load_mnist(shipped().join("mnist"), false).unwrap();
    let idx: Vec<usize> = (0..10_000).step_by(97).collect();
    let pre = Preprocess::mnist();
    let (a, la) = pre.batch(test.as_ref(), &idx).unwrap();
    let (b, lb) = pre.batch(&ds, &idx).unwrap();
    assert_eq!(la, lb);
    assert!(a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
    let opt = open(&shipped().join("optdigits/optdigits-test.csv.gz")).unwrap();
    assert_eq!(opt.kind, DataKind::Optdigits);
    let all = opt.single().unwrap();
    assert_eq!((all.len(), all.num_classes(), all.image(0).unwrap().height), (1797, 10, 8));
    assert!(all.describe(3).contains("optdigits-test.csv.gz"));
    // Resized to the backbone's 28×28.
    let (x, _) = pre.batch(all.as_ref(), &[0, 1, 2]).unwrap();
    assert_eq!(x.shape(), &[3, 1, 28, 28]);
    // Not a dataset.
    let e = err_string(open(&shipped().join("backbone.safetensors")));
    assert!(e.contains("no `images` and `labels`"), "{e}");
    let e = err_string(open(&shipped().join("README.md")));
    assert!(e.contains("unknown data file"), "{e}");
    assert!(matches!(open(&shipped().join("nope")), Err(Error::Io { .. })));
}

#[test]
fn locating_the_data_directory() {
    let dir = temp_dir("locate");
    let exe = dir.join("bin");
    std::fs::create_dir_all(exe.join("data")).unwrap();
    let cwd = dir.join("work");
    std::fs::create_dir_all(cwd.join("data")).unwrap();
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    // The flag first, then the variable, then ./data, then beside the executable.
    assert_eq!(locate_data_dir_in(Some(&other), Some(exe.clone().into()), &cwd, Some(&exe)).unwrap(), other);
    assert_eq!(locate_data_dir_in(None, Some(other.clone().into()), &cwd, Some(&exe)).unwrap(), other);
    assert_eq!(locate_data_dir_in(None, None, &cwd, Some(&exe)).unwrap(), cwd.join("data"));
    assert_eq!(locate_data_dir_in(None, Some("".into()), &other, Some(&exe)).unwrap(), exe.join("data"));
    // A flag or variable naming nothing is an error, not skipped.
    let e = err_string(locate_data_dir_in(Some(&dir.join("nope")), None, &cwd, None));
    assert!(e.contains("given explicitly") && e.contains("nope"), "{e}");
    let e = err_string(locate_data_dir_in(None, Some(dir.join("nope").into()), &cwd, None));
    assert!(e.contains("CONSOLIDATOR_DATA") && e.contains("nope"), "{e}");
    // Nothing found: every place is listed.
    let e = err_string(locate_data_dir_in(None, None, &other, Some(&other)));
    assert!(
        e.contains("$CONSOLIDATOR_DATA (not set)") && e.contains("other/data") && e.contains("beside the executable"),
        "{e}"
    );
    assert!(err_string(locate_data_dir_in(None, None, &other, None)).contains("location is unknown"));
    // From the repository root (where tests run) the real search finds ./data.
    let found = consolidator::data::locate_data_dir(None).unwrap();
    assert!(found.join("mnist").is_dir(), "{}", found.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Stratified splits

#[test]
fn stratified_split_errors() {
    let e = err_string(stratified_split(&[0, 0, 1], 3, 0.2, 0));
    assert!(e.contains("class 2 has no examples"), "{e}");
    assert!(err_string(stratified_split(&[0, 1], 2, 1.0, 0)).contains("[0, 1)"));
    assert!(err_string(stratified_split(&[0, 1], 2, -0.1, 0)).contains("[0, 1)"));
    assert!(err_string(stratified_split(&[0, 1], 2, f32::NAN, 0)).contains("[0, 1)"));
    assert!(err_string(stratified_split(&[0, 4], 2, 0.2, 0)).contains("label 4"));
    let e = err_string(stratified_split(&[0, 1, 2], 3, 0.5, 0));
    assert!(e.contains("leaves no validation example"), "{e}");
    let (t, v) = stratified_split(&[0, 1, 0, 1], 2, 0.0, 0).unwrap();
    assert_eq!((t, v), (vec![0, 1, 2, 3], vec![]));
    // A Subset refuses out-of-range indices.
    let ds: Arc<dyn Source> = Arc::new(Dataset::new(Tensor::zeros(&[2, 1, 1, 1]), vec![0, 1], 2).unwrap());
    assert!(Subset::new(ds.clone(), vec![0, 2]).is_err());
    let s = Subset::new(ds, vec![1, 1, 0]).unwrap();
    assert_eq!(labels(&s), vec![1, 1, 0]);
    assert!(s.image(3).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn stratified_split_properties(
        counts in proptest::collection::vec(1usize..40, 1..8),
        fraction in 0.0f32..0.95,
        seed in any::<u64>(),
        shuffle_seed in any::<u64>(),
    ) {
        use rand::{seq::SliceRandom, SeedableRng};
        let k = counts.len();
        let mut labels: Vec<usize> = counts.iter().enumerate().flat_map(|(c, &n)| std::iter::repeat_n(c, n)).collect();
        labels.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));
        let expected_val: Vec<usize> =
            counts.iter().map(|&n| ((n as f64 * fraction as f64).round() as usize).min(n - 1)).collect();
        let result = stratified_split(&labels, k, fraction, seed);
        if fraction > 0.0 && expected_val.iter().sum::<usize>() == 0 {
            prop_assert!(result.is_err());
            return Ok(());
        }
        let (train, val) = result.unwrap();
        // A partition of 0..N, both sorted.
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        prop_assert!(train.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]));
        // Per class: the rounded proportion in val, at least one in train.
        for (c, &expected) in expected_val.iter().enumerate() {
            let in_val = val.iter().filter(|&&i| labels[i] == c).count();
            let in_train = train.iter().filter(|&&i| labels[i] == c).count();
            prop_assert_eq!(in_val, expected);
            prop_assert!(in_train >= 1);
        }
        // Deterministic per seed.
        prop_assert_eq!(stratified_split(&labels, k, fraction, seed).unwrap(), (train, val));
    }
}

// ---------------------------------------------------------------------------------------------
// The table of bad data in docs/ROBUSTNESS.md

/// Prints `| bad data | error |` rows for docs/ROBUSTNESS.md (`$T` is the temporary directory):
/// `cargo test --release --test data_sources -- --ignored --nocapture bad_data_table`.
#[test]
#[ignore = "prints the docs table; run by hand"]
fn bad_data_table() {
    let root = temp_dir("table");
    let t = root.display().to_string();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |case: &str, r: consolidator::Result<consolidator::data::Opened>| {
        let msg = match r {
            Ok(o) => format!("(accepted: {o:?})"),
            Err(e) => e.to_string().replace(&t, "$T"),
        };
        rows.push((case.to_string(), msg));
    };
    let p = |s: &str| root.join(s);
    row("missing path", open(&p("nope")));
    write(&p("notes.txt"), b"x");
    row("unknown file kind", open(&p("notes.txt")));
    std::fs::create_dir_all(p("empty")).unwrap();
    row("directory with no dataset in it", open(&p("empty")));
    write(&p("loose/a.png"), b"x");
    row("images not in class folders", open(&p("loose")));
    write(&p("one/cat/a.pgm"), &pgm(1, 1, 255, &[0]));
    row("a single class folder", open(&p("one")));
    write(&p("hollow/cat/a.pgm"), &pgm(1, 1, 255, &[0]));
    write(&p("hollow/dog/readme.txt"), b"x");
    row("a class folder without images", open(&p("hollow")));
    write(&p("mixed/train/cat/a.pgm"), &pgm(1, 1, 255, &[0]));
    write(&p("mixed/dog/a.pgm"), &pgm(1, 1, 255, &[0]));
    row("a class folder beside split folders", open(&p("mixed")));
    write(&p("idx/train-images-idx3-ubyte"), &idx(3, &[2, 2, 2], &[0; 8]));
    row("IDX images without labels", open(&p("idx")));
    {
        let path = p("bomb/train-labels-idx1-ubyte.gz");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        e.write_all(&idx(1, &[2], &[])).unwrap();
        e.write_all(&vec![0u8; 64 << 20]).unwrap();
        e.finish().unwrap();
        write(&p("bomb/train-images-idx3-ubyte"), &idx(3, &[2, 1, 1], &[0, 0]));
    }
    row("IDX gzip bomb (declares 2 labels, inflates to 64 MiB)", open(&p("bomb")));
    let ts = |name: &str, bytes: Vec<u8>| {
        let path = root.join(name);
        write(&path, &bytes);
        open(&path)
    };
    row(
        "tensor file: ambiguous layout [N, 3, 8, 3]",
        ts(
            "amb.safetensors",
            safetensors(&[("images", "U8", &[2, 3, 8, 3], vec![0; 144]), ("labels", "I64", &[2], i64s(&[0, 1]))], &[]),
        ),
    );
    row(
        "tensor file: negative label",
        ts(
            "neg.safetensors",
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, -3]))], &[]),
        ),
    );
    row(
        "tensor file: label beyond the class names",
        ts(
            "names.safetensors",
            safetensors(
                &[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "I64", &[2], i64s(&[0, 2]))],
                &[("class_names", "[\"cat\",\"dog\"]")],
            ),
        ),
    );
    row(
        "tensor file: normalised float images",
        ts(
            "norm.safetensors",
            safetensors(
                &[("images", "F32", &[1, 1, 2], f32s(&[0.5, -0.42])), ("labels", "I64", &[1], i64s(&[1]))],
                &[("num_classes", "2")],
            ),
        ),
    );
    row(
        "tensor file: fractional labels",
        ts(
            "frac.safetensors",
            safetensors(&[("images", "U8", &[2, 2, 2], vec![0; 8]), ("labels", "F32", &[2], f32s(&[0.0, 1.5]))], &[]),
        ),
    );
    if std::path::Path::new("/dev/zero").exists() {
        std::os::unix::fs::symlink("/dev/zero", p("zero.safetensors")).unwrap();
        row("tensor file: /dev/zero (through a symlink)", open(&p("zero.safetensors")));
    }
    // Decode-time errors, through a batch.
    let mut decode_rows = Vec::new();
    let dir = p("decode");
    write(&dir.join("a/ok.pgm"), &pgm(1, 1, 255, &[0]));
    write(&dir.join("b/ok.pgm"), &pgm(1, 1, 255, &[0]));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("HTML saved as .png", "a/page.png", b"<html>404</html>".to_vec()),
        ("empty file", "a/empty.jpg", Vec::new()),
        ("PGM cut short", "a/cut.pgm", pgm(4, 4, 255, &[1; 16])[..20].to_vec()),
        ("PGM declaring 65536×65536", "a/huge.pgm", b"P5 65536 65536 255 ".to_vec()),
        #[cfg(feature = "image")]
        ("PNG cut in its pixel data", "b/cut.png", {
            let full = codecs::png(
                32,
                32,
                png::ColorType::Rgb,
                png::BitDepth::Eight,
                &(0..3072).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
            );
            full[..full.len() / 2].to_vec()
        }),
        #[cfg(feature = "image")]
        ("JPEG cut before its end", "b/cut.jpg", {
            let full = codecs::jpeg(
                32,
                32,
                jpeg_encoder::ColorType::Rgb,
                &(0..3072).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
            );
            full[..full.len() - 40].to_vec()
        }),
    ];
    for (_, name, bytes) in &cases {
        write(&dir.join(name), bytes);
    }
    let folder = ImageFolder::open(&dir).unwrap();
    let pre = Preprocess::imagenet(8, 8);
    for (case, name, _) in &cases {
        let i = folder.files().iter().position(|(f, _)| f.ends_with(name)).unwrap();
        let msg = err_string(pre.batch(&folder, &[i])).replace(&t, "$T");
        decode_rows.push((case.to_string(), msg));
    }
    println!("| bad data | error |\n| --- | --- |");
    for (case, msg) in rows.iter().chain(&decode_rows) {
        // Escaped for Markdown and rustdoc (the page is also the crate's `guide::robustness`).
        let cell =
            msg.replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;").replace('[', "\\[").replace(']', "\\]");
        println!("| {case} | {cell} |");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[cfg(not(feature = "image"))]
#[test]
fn without_the_image_feature_png_and_jpeg_are_clear_errors() {
    let e = err_string(decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "a.png"));
    assert!(e.contains("a.png") && e.contains("feature `image`"), "{e}");
    let e = err_string(decode_image(&[0xff, 0xd8, 0xff, 0xe0], "b.jpg"));
    assert!(e.contains("b.jpg") && e.contains("feature `image`"), "{e}");
    decode_image(&pgm(1, 1, 255, &[3]), "c.pgm").unwrap(); // our own parser still works
}

#[cfg(feature = "image")]
#[test]
fn fuzz_found_jpeg_that_made_the_decoder_panic() {
    // Regression (fuzz target `image`): a baseline JPEG whose second component has horizontal
    // sampling 4 against 1 for the first made zune-jpeg 0.5.15's IDCT (AVX2 and scalar alike)
    // index past its output: a panic. Now refused from the frame header.
    let bytes = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile/jpeg-idct-out-of-bounds.jpg"),
    )
    .unwrap();
    let e = err_string(decode_image(&bytes, "idct.jpg"));
    assert!(e.contains("idct.jpg") && e.contains("more densely than the first"), "{e}");
    consolidator::data::fuzz::fuzz_image(&bytes);
}

#[test]
fn shift_batch_translates_each_image_and_copies_edges() {
    use consolidator::data::image::shift_batch;
    use rand::{Rng, SeedableRng};
    let (b, c, h, w, max) = (64, 2, 3, 5, 2);
    let src: Vec<f32> = (0..b * c * h * w).map(|v| v as f32).collect();
    let x = Tensor::new(&[b, c, h, w], src.clone()).unwrap();
    let y = shift_batch(&x, max, &mut rand::rngs::StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(y.shape(), x.shape());
    // The same draws, replayed: image i moves by (dy, dx), every channel alike.
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut seen = std::collections::HashSet::new();
    for i in 0..b {
        let (dy, dx): (isize, isize) = (rng.gen_range(-2..=2), rng.gen_range(-2..=2));
        seen.insert((dy, dx));
        for ch in 0..c {
            for yy in 0..h {
                for xx in 0..w {
                    let sy = (yy as isize - dy).clamp(0, h as isize - 1) as usize;
                    let sx = (xx as isize - dx).clamp(0, w as isize - 1) as usize;
                    let at = |yy: usize, xx: usize| ((i * c + ch) * h + yy) * w + xx;
                    assert_eq!(
                        y.data()[at(yy, xx)],
                        src[at(sy, sx)],
                        "image {i} ({dy}, {dx}) channel {ch} at ({yy}, {xx})"
                    );
                }
            }
        }
    }
    assert!(seen.len() > 15, "64 draws should cover most of the 25 shifts, saw {}", seen.len());
    // Bad input: not a batch of images, or a shift as large as the image.
    let err = shift_batch(&Tensor::zeros(&[3, 5]), 1, &mut rng).unwrap_err().to_string();
    assert!(err.contains("shift_batch") && err.contains("[B, C, H, W]"), "{err}");
    let err = shift_batch(&x, 3, &mut rng).unwrap_err().to_string();
    assert!(err.contains("3 pixels"), "{err}");
}
