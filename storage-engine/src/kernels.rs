//! TEMPORARY scalar kernels until the SIMD module lands (replaced by kernels/).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}
pub fn words_for(rows: usize) -> usize {
    rows.div_ceil(64)
}
#[derive(Clone, Copy, Debug)]
pub struct Kernels;
fn bit(w: &[u64], i: usize) -> bool {
    w[i / 64] >> (i % 64) & 1 == 1
}
fn fill(n: usize, validity: Option<&[u64]>, out: &mut [u64], f: impl Fn(usize) -> bool) {
    for w in out.iter_mut().take(words_for(n)) {
        *w = 0;
    }
    for i in 0..n {
        if validity.is_none_or(|v| bit(v, i)) && f(i) {
            out[i / 64] |= 1 << (i % 64);
        }
    }
}
fn cmp<T: PartialOrd>(a: T, op: CmpOp, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}
impl Kernels {
    pub fn detect() -> Kernels {
        Kernels
    }
    pub fn cmp_i64(&self, v: &[i64], op: CmpOp, r: i64, val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| cmp(v[i], op, r))
    }
    pub fn cmp_i32(&self, v: &[i32], op: CmpOp, r: i32, val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| cmp(v[i], op, r))
    }
    pub fn cmp_f64(&self, v: &[f64], op: CmpOp, r: f64, val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| cmp(v[i], op, r))
    }
    pub fn between_i64(&self, v: &[i64], l: i64, h: i64, val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| v[i] >= l && v[i] <= h)
    }
    pub fn between_i32(&self, v: &[i32], l: i32, h: i32, val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| v[i] >= l && v[i] <= h)
    }
    pub fn between_f64(&self, v: &[f64], l: f64, h: f64, val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| v[i] >= l && v[i] <= h)
    }
    pub fn in_i64(&self, v: &[i64], s: &[i64], val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| s.contains(&v[i]))
    }
    pub fn in_i32(&self, v: &[i32], s: &[i32], val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| s.contains(&v[i]))
    }
    pub fn in_f64(&self, v: &[f64], s: &[f64], val: Option<&[u64]>, out: &mut [u64]) {
        fill(v.len(), val, out, |i| s.contains(&v[i]))
    }
    pub fn select_codes(
        &self,
        c: &[i32],
        m: &[u64],
        n: usize,
        val: Option<&[u64]>,
        out: &mut [u64],
    ) {
        fill(c.len(), val, out, |i| {
            c[i] >= 0 && (c[i] as usize) < n && bit(m, c[i] as usize)
        })
    }
    pub fn is_null(&self, val: Option<&[u64]>, n: usize, out: &mut [u64]) {
        fill(n, None, out, |i| val.is_some_and(|v| !bit(v, i)))
    }
    pub fn is_not_null(&self, val: Option<&[u64]>, n: usize, out: &mut [u64]) {
        fill(n, None, out, |i| val.is_none_or(|v| bit(v, i)))
    }
    pub fn and(&self, d: &mut [u64], s: &[u64]) {
        for (a, b) in d.iter_mut().zip(s) {
            *a &= b
        }
    }
    pub fn or(&self, d: &mut [u64], s: &[u64]) {
        for (a, b) in d.iter_mut().zip(s) {
            *a |= b
        }
    }
    pub fn not(&self, d: &mut [u64], n: usize) {
        for w in d.iter_mut() {
            *w = !*w
        }
        if n % 64 != 0 {
            let l = words_for(n) - 1;
            d[l] &= (1u64 << (n % 64)) - 1
        }
    }
    pub fn count_ones(&self, w: &[u64]) -> usize {
        w.iter().map(|x| x.count_ones() as usize).sum()
    }
    pub fn sum_f64(&self, v: &[f64], m: Option<&[u64]>) -> (f64, u64) {
        let mut s = 0.0;
        let mut c = 0;
        for i in 0..v.len() {
            if m.is_none_or(|m| bit(m, i)) {
                s += v[i];
                c += 1
            }
        }
        (s, c)
    }
    pub fn sum_i64(&self, v: &[i64], m: Option<&[u64]>) -> (i128, u64) {
        let mut s = 0i128;
        let mut c = 0;
        for i in 0..v.len() {
            if m.is_none_or(|m| bit(m, i)) {
                s += v[i] as i128;
                c += 1
            }
        }
        (s, c)
    }
    pub fn group_sum_f64(
        &self,
        g: &[u32],
        v: &[f64],
        m: Option<&[u64]>,
        s: &mut [f64],
        c: &mut [u64],
    ) {
        for i in 0..v.len() {
            if m.is_none_or(|m| bit(m, i)) {
                let k = g[i] as usize;
                if k < s.len() {
                    s[k] += v[i];
                    c[k] += 1
                }
            }
        }
    }
    pub fn group_sum_i64(
        &self,
        g: &[u32],
        v: &[i64],
        m: Option<&[u64]>,
        s: &mut [i128],
        c: &mut [u64],
    ) {
        for i in 0..v.len() {
            if m.is_none_or(|m| bit(m, i)) {
                let k = g[i] as usize;
                if k < s.len() {
                    s[k] += v[i] as i128;
                    c[k] += 1
                }
            }
        }
    }
    pub fn group_count(&self, g: &[u32], m: Option<&[u64]>, c: &mut [u64]) {
        for i in 0..g.len() {
            if m.is_none_or(|m| bit(m, i)) {
                let k = g[i] as usize;
                if k < c.len() {
                    c[k] += 1
                }
            }
        }
    }
}
