"""The micro-kernel's depth loop as LLVM IR (Numba intrinsics), apart from the
kernels that call it (kernels/matmul.py): ``fma_panel`` and ``fma_panel_rows``
multiply one packed A panel by one B panel with the MR x NR/L accumulators held
in vector SSA values, so they live in registers by construction, whatever the
auto-vectoriser would have chosen for the tile, the ISA and the LLVM version."""
import llvmlite.ir as ir
from numba import types
from numba.extending import intrinsic

from ._numba import TARGET


def panel_codegen(dtype, MR_, NR_, lanes, to_rows, strided_a=False, pack_a=False, table_a=False):
    """LLVM IR of the depth loop over one A and one B panel; the MR x NR/L
    accumulators are vector SSA values (phi nodes) carried through the loop.
    Depth step p reads B's row at Bp[b0 + p·ldb:] (ldb = NR for a packed panel,
    a matrix's row length for unpacked rows) and row r of A at Ap[a0 + p·MR + r]
    (a packed panel) or, ``strided_a``, at Ap[a0 + p·a_step + r·a_row] (rows or
    columns of a matrix in place: no packing). ``to_rows``: the result goes into
    C's rows (C[ci + r, cj:cj + NR], contiguous) with vector loads, adds and
    stores; else into a tile of MR x NR values. ``pack_a`` (with ``strided_a``):
    each A value read is also stored at Pa[pa0 + p·MR + r], so the panel comes
    out packed for the calls after this one. ``table_a``: row r of A at depth p
    is Ap[rows[r0 + r] + deps[d0 + p]], two tables of offsets (an implicit
    GEMM: a convolution's patches read straight from its input, a row per
    output pixel and a depth step per filter tap, or the other way round)."""
    V = NR_ // lanes

    def codegen(context, builder, signature, args):
        sig = signature.args
        if strided_a:  # (Ap, a0, a_step, a_row, Bp, ...): the A strides out of the way
            a_step_v, a_row_v = args[2], args[3]
            args, sig = args[:2] + args[4:], sig[:2] + sig[4:]
        if table_a:  # (Ap, rows, r0, deps, d0, Bp, ...): the tables out of the way, a0 = r0 unused
            rows_arr, r0_v, deps_arr, d0_v = args[1:5]
            rows_ty, deps_ty = sig[1], sig[3]
            args, sig = args[:1] + args[2:3] + args[5:], sig[:1] + sig[2:3] + sig[5:]
        if pack_a:  # (Ap, a0, Pa, pa0, Bp, ...): the packed copy's array and offset likewise
            pa_arr, pa0_v, paty = args[2], args[3], sig[2]
            args, sig = args[:2] + args[4:], sig[:2] + sig[4:]
        ap_arr, a0_v, bp_arr, b0_v, ldb_v, kc_v, c_arr = args[:7]
        aty, _, bty, _, _, _, cty = sig[:7]
        elem = context.get_data_type(dtype)
        vec = ir.VectorType(elem, lanes)
        ap = context.make_array(aty)(context, builder, ap_arr).data
        bp = context.make_array(bty)(context, builder, bp_arr).data
        c = context.make_array(cty)(context, builder, c_arr)
        intp = a0_v.type
        zero = ir.Constant(vec, [ir.Constant(elem, 0.0)] * lanes)
        undef = ir.Constant(vec, ir.Undefined)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        # declared by hand: llvmlite's declare_intrinsic names scalar types only
        name = f"llvm.fma.v{lanes}{'f64' if dtype == types.float64 else 'f32'}"
        fma = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]), name=name)
        if to_rows:
            # C's tile is read and written once the loop ends; its rows usually
            # lie outside the L2 (C is the largest operand), so they are
            # prefetched now and arrive while the FMAs run.
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            prefetch = builder.module.globals.get("llvm.prefetch.p0") or ir.Function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                name="llvm.prefetch.p0")
            ci_v, cj_v = args[7], args[8]
            row_stride = builder.extract_value(c.strides, 0)
            base = builder.bitcast(c.data, i8p)
            itemsize = context.get_abi_sizeof(elem)
            for r in range(MR_):
                row = builder.mul(builder.add(ci_v, ir.Constant(intp, r)), row_stride)
                row = builder.add(row, builder.mul(cj_v, ir.Constant(intp, itemsize)))
                for line in range(0, NR_ * itemsize, 64):
                    ptr = builder.gep(base, [builder.add(row, ir.Constant(intp, line))])
                    builder.call(prefetch, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3),
                                            ir.Constant(i32, 1)])
        if table_a:
            rows_p = context.make_array(rows_ty)(context, builder, rows_arr).data
            deps_p = context.make_array(deps_ty)(context, builder, deps_arr).data

            def offset(ptr, i):
                return builder.sext(builder.load(builder.gep(ptr, [i])), intp) \
                    if ptr.type.pointee.width < intp.width else builder.load(builder.gep(ptr, [i]))
            row_offsets = [offset(rows_p, builder.add(r0_v, ir.Constant(intp, r))) for r in range(MR_)]
        entry = builder.basic_block
        loop = builder.append_basic_block("fma_panel.loop")
        done = builder.append_basic_block("fma_panel.done")
        builder.cbranch(builder.icmp_signed(">", kc_v, ir.Constant(intp, 0)), loop, done)
        builder.position_at_end(loop)
        p = builder.phi(intp)
        accs = [builder.phi(vec) for _ in range(MR_ * V)]
        b_base = builder.add(b0_v, builder.mul(p, ldb_v))
        if table_a:
            a_base = offset(deps_p, builder.add(d0_v, p))
            a_rows = row_offsets
        elif strided_a:
            a_base = builder.add(a0_v, builder.mul(p, a_step_v))
            a_rows = [builder.mul(ir.Constant(intp, r), a_row_v) for r in range(MR_)]
        else:
            a_base = builder.add(a0_v, builder.mul(p, ir.Constant(intp, MR_)))
            a_rows = [ir.Constant(intp, r) for r in range(MR_)]
        bvecs = [builder.load(builder.bitcast(builder.gep(bp, [builder.add(b_base, ir.Constant(intp, v * lanes))]),
                                              vec.as_pointer()), align=4) for v in range(V)]
        if pack_a:
            pa = context.make_array(paty)(context, builder, pa_arr).data
            pa_base = builder.add(pa0_v, builder.mul(p, ir.Constant(intp, MR_)))
        new = []
        for r in range(MR_):
            a = builder.load(builder.gep(ap, [builder.add(a_base, a_rows[r])]))
            if pack_a:
                builder.store(a, builder.gep(pa, [builder.add(pa_base, ir.Constant(intp, r))]))
            splat = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(ir.IntType(32), 0)),
                                           undef, mask)
            new += [builder.call(fma, [splat, bvecs[v], accs[r * V + v]]) for v in range(V)]
        p_next = builder.add(p, ir.Constant(intp, 1))
        latch = builder.basic_block
        builder.cbranch(builder.icmp_signed("<", p_next, kc_v), loop, done)
        p.add_incoming(ir.Constant(intp, 0), entry)
        p.add_incoming(p_next, latch)
        for acc, value in zip(accs, new):
            acc.add_incoming(zero, entry)
            acc.add_incoming(value, latch)
        builder.position_at_end(done)
        results = []
        for i in range(MR_ * V):  # every phi first: they must open their block
            results.append(builder.phi(vec))
            results[-1].add_incoming(zero, entry)
            results[-1].add_incoming(new[i], latch)
        if to_rows:
            ci_v, cj_v, accumulate = args[7], args[8], args[9]
            row_stride = builder.extract_value(c.strides, 0)  # bytes
            # byte offsets from C's data pointer by GEP, not integer arithmetic on
            # it: a pointer made by inttoptr no longer says what it points into,
            # and with the tile inlined into its caller (the AVX2 build) LLVM
            # moved the caller's reads of an edge tile above these stores
            base = builder.bitcast(c.data, ir.IntType(8).as_pointer())
            itemsize = ir.Constant(intp, context.get_abi_sizeof(elem))
            for r in range(MR_):
                row = builder.mul(builder.add(ci_v, ir.Constant(intp, r)), row_stride)
                for v in range(V):
                    col = builder.mul(builder.add(cj_v, ir.Constant(intp, v * lanes)), itemsize)
                    ptr = builder.bitcast(builder.gep(base, [builder.add(row, col)]), vec.as_pointer())
                    value = results[r * V + v]
                    with builder.if_then(accumulate):
                        builder.store(builder.fadd(builder.load(ptr, align=4), value), ptr, align=4)
                    with builder.if_then(builder.not_(accumulate)):
                        builder.store(value, ptr, align=4)
        else:
            for i, result in enumerate(results):
                r, v = divmod(i, V)
                ptr = builder.gep(c.data, [ir.Constant(intp, r * NR_ + v * lanes)])
                builder.store(result, builder.bitcast(ptr, vec.as_pointer()), align=4)
        return context.get_dummy_value()
    return codegen


def tile_lanes(dtype, mr, nr):
    """The vector lanes of an mr x nr tile of ``dtype`` (the target's vector
    width, at most nr), or None where the tile is not compile-time constants or
    nr is not a whole number of vectors (the intrinsic then does not match)."""
    if not (isinstance(mr, types.IntegerLiteral) and isinstance(nr, types.IntegerLiteral)):
        return None
    nr = nr.literal_value
    lanes = min(max(1, TARGET["vector_bits"] // (8 * (8 if dtype == types.float64 else 4))), nr)
    return lanes if nr % lanes == 0 else None


@intrinsic
def fma_panel(typingctx, Ap, a0, Bp, b0, ldb, kc, tile, mr, nr):
    """tile[:mr·nr] = the A panel at Ap[a0:] (kc groups of mr values) times the kc
    rows of nr values at Bp[b0 + p·ldb:], written as LLVM vector code.

    The mr x nr/L accumulators are SSA vector values carried through the depth
    loop, L = the target's vector lanes for the dtype, so they live in registers
    by construction: no reliance on the auto-vectoriser, whose choices for such
    a loop change with the tile, the ISA and the LLVM version. Each depth step is
    nr/L vector loads of B, mr broadcasts of A and mr·nr/L fused multiply-adds;
    LLVM legalises <L x float> to zmm, ymm or NEON q registers."""
    lanes = tile_lanes(Ap.dtype, mr, nr)
    if lanes is None:
        return None
    return (types.none(Ap, a0, Bp, b0, ldb, kc, tile, mr, nr),
            panel_codegen(Ap.dtype, mr.literal_value, nr.literal_value, lanes, False))


@intrinsic
def fma_panel_rows(typingctx, Ap, a0, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr):
    """fma_panel, the result stored (or, with ``accumulate``, added) straight into
    C[ci:ci+mr, cj:cj+nr], whose rows must be contiguous: vector loads and
    stores instead of mr·nr scalar ones through a tile."""
    lanes = tile_lanes(Ap.dtype, mr, nr)
    if lanes is None:
        return None
    return (types.none(Ap, a0, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr),
            panel_codegen(Ap.dtype, mr.literal_value, nr.literal_value, lanes, True))


@intrinsic
def fma_strided_rows(typingctx, A, a0, a_step, a_row, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr):
    """fma_panel_rows with A read in place: row r of the panel at depth p is
    A[a0 + p·a_step + r·a_row] (a_step = 1, a_row = the row length: a matrix's
    rows; a_step = the row length, a_row = 1: its columns, i.e. Aᵀ), so a
    gathered batch multiplies without being packed first. The caller keeps every
    such index inside A."""
    lanes = tile_lanes(A.dtype, mr, nr)
    if lanes is None:
        return None
    return (types.none(A, a0, a_step, a_row, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr),
            panel_codegen(A.dtype, mr.literal_value, nr.literal_value, lanes, True, strided_a=True))


@intrinsic
def fma_strided_rows_packing(typingctx, A, a0, a_step, a_row, Pa, pa0, Bp, b0, ldb, kc, C, ci, cj, accumulate,
                             mr, nr):
    """fma_strided_rows that also writes the A panel it reads, packed (kc groups
    of mr values), to Pa[pa0:]: a block's first product packs A on the way, and
    the block's other products read the packed panel."""
    lanes = tile_lanes(A.dtype, mr, nr)
    if lanes is None:
        return None
    return (types.none(A, a0, a_step, a_row, Pa, pa0, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr),
            panel_codegen(A.dtype, mr.literal_value, nr.literal_value, lanes, True, strided_a=True, pack_a=True))


@intrinsic
def fma_table_rows(typingctx, A, rows, r0, deps, d0, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr):
    """fma_panel_rows with A read through two tables of offsets: row r of the
    panel at depth p is A[rows[r0 + r] + deps[d0 + p]] (integer tables). A
    convolution's input with rows = the output pixels' offsets and deps = the
    filter taps' offsets is its patch matrix, never built (implicit GEMM); the
    tables swapped give the patch matrix transposed. The caller keeps every
    such index inside A."""
    lanes = tile_lanes(A.dtype, mr, nr)
    if lanes is None or not (isinstance(rows, types.Array) and isinstance(rows.dtype, types.Integer)
                             and isinstance(deps, types.Array) and isinstance(deps.dtype, types.Integer)):
        return None
    return (types.none(A, rows, r0, deps, d0, Bp, b0, ldb, kc, C, ci, cj, accumulate, mr, nr),
            panel_codegen(A.dtype, mr.literal_value, nr.literal_value, lanes, True, table_a=True))
