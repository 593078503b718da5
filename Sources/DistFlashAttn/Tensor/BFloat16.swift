/// bfloat16 conversion: the top 16 bits of a float32, rounded to nearest even.
public enum BFloat16 {
    public static func bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 }  // keep it a NaN
        let roundingBias: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
    }

    public static func value(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    public static func round(_ value: Float) -> Float { Self.value(bits(value)) }
}
