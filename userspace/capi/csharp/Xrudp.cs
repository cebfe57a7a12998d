// C# binding of the xrudp C API (include/xrudp.h): P/Invoke declarations and a
// SafeHandle, the shape Unity native plugins use. Drop this file into the project and the
// native library (xrudp_c: libxrudp_c.so, xrudp_c.dll, libxrudp_c.dylib) where the
// runtime finds it (docs/CLIENTS.md, "Unity"). Written for C# 7 (mono-mcs compiles it; Unity takes it as is).
//
// Ownership: every array passed in is copied by the library during the call; received
// messages are copied into the caller's byte[]. No callbacks, no threads: call Poll or
// Wait from the game loop, then NextEvent until it returns false.
using System;
using System.Runtime.InteropServices;

namespace Xrudp
{
    /// <summary>Result codes (XrudpStatus in xrudp.h).</summary>
    public enum Status : int
    {
        Ok = 0, NoEvent = 1, NullPointer = -1, InvalidHandle = -2, InvalidArgument = -3,
        BufferTooSmall = -4, NotConnected = -5, QueueFull = -6, MessageTooLarge = -7,
        BadChannel = -8, Io = -9, Internal = -10,
    }

    public enum EventKind : int { None = 0, Connected = 1, Message = 2, Disconnected = 3, Draining = 4 }

    public enum Reason : int
    {
        None = 0, Local = 1, Peer = 2, TimedOut = 3, Violation = 4, PeerViolation = 5,
        ServerShutdown = 6, HandshakeTimedOut = 7, Rejected = 8, VersionMismatch = 9, Other = 10,
    }

    public enum Protection : uint { Anonymous = 0, Pinned = 1, Token = 2, Off = 3 }

    /// <summary>Path MTU discovery (XRUDP_PMTUD_* in xrudp.h): On probes up to the MTU.</summary>
    public enum Pmtud : uint { On = 0, Off = 1 }

    /// <summary>XrudpEvent: same layout as the C struct.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Event
    {
        public EventKind Kind;
        public uint Channel;
        public Reason Reason;
        public uint ReasonCode;
        /// <summary>Message length; with BufferTooSmall, the size needed.</summary>
        public ulong Len;
    }

    /// <summary>XrudpStats: connection quality, same layout as the C struct.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Stats
    {
        public int State;
        public uint Quiet;
        public ulong RttUs, RttVarUs, Cwnd, BytesInFlight, SendBuffered;
        public ulong PacketsOut, PacketsIn, LostPackets, RetransmittedPackets;
        public double Loss;
        public ulong MinRttUs, JitterUs;
        /// <summary>The largest datagram sent now: the path MTU found so far (0 until connected).</summary>
        public ulong Mtu;
        public ulong PmtuProbes, PmtuBlackHoles;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct ConnectOptions
    {
        public uint Protection;
        public uint KeyLen;
        public IntPtr Key;
        public uint Mtu;
        public Pmtud Pmtud;
    }

    internal static class Native
    {
        const string Lib = "xrudp_c";

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr xrudp_status_text(int status);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_connect(
            [MarshalAs(UnmanagedType.LPStr)] string server, ref ConnectOptions options, out ulong conn);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_poll(ulong conn);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_wait(ulong conn, uint timeoutMs);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_next_event(ulong conn, out Event ev, byte[] buf, UIntPtr bufLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_send(ulong conn, byte channel, byte[] data, UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_stats(ulong conn, out Stats stats);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_disconnect(ulong conn, ushort code);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern Status xrudp_free(ulong conn);
    }

    /// <summary>An xrudp error: the status code and the library's text for it.</summary>
    public class XrudpException : Exception
    {
        public readonly Status Status;
        public XrudpException(string what, Status status)
            : base(what + ": " + Text(status) + " (" + (int)status + ")") { Status = status; }

        public static string Text(Status status)
        {
            return Marshal.PtrToStringAnsi(Native.xrudp_status_text((int)status));
        }
    }

    /// <summary>
    /// Owns a connection handle and frees it exactly once (on Dispose, or by the
    /// finalizer). The C handle is a 64-bit number, not a pointer, so it is kept beside
    /// SafeHandle's IntPtr (which then only marks the handle as live), the same on 32-
    /// and 64-bit players.
    /// </summary>
    public sealed class ConnectionHandle : SafeHandle
    {
        internal ulong Id;

        public ConnectionHandle() : base(IntPtr.Zero, true) { }

        internal ConnectionHandle(ulong id) : base(IntPtr.Zero, true)
        {
            Id = id;
            SetHandle(new IntPtr(1));
        }

        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }

        protected override bool ReleaseHandle()
        {
            return Native.xrudp_free(Id) == Status.Ok;
        }
    }

    /// <summary>One connection to an xrudp server, driven from the game loop.</summary>
    public sealed class Connection : IDisposable
    {
        readonly ConnectionHandle h;

        Connection(ConnectionHandle handle) { h = handle; }

        /// <summary>
        /// Starts connecting to "ip:port"; watch for EventKind.Connected. mtu is the largest
        /// datagram to send, 1200..1472 (0: 1200); with pmtud On the connection finds what the
        /// path carries up to it (Stats.Mtu).
        /// </summary>
        public static Connection Connect(string server, Protection protection = Protection.Anonymous, byte[] key = null,
            uint mtu = 0, Pmtud pmtud = Pmtud.On)
        {
            var opts = new ConnectOptions { Protection = (uint)protection, Mtu = mtu, Pmtud = pmtud };
            GCHandle pin = default(GCHandle);
            try
            {
                if (key != null && key.Length > 0)
                {
                    pin = GCHandle.Alloc(key, GCHandleType.Pinned);
                    opts.Key = pin.AddrOfPinnedObject();
                    opts.KeyLen = (uint)key.Length;
                }
                ulong id;
                Check("connect", Native.xrudp_connect(server, ref opts, out id));
                return new Connection(new ConnectionHandle(id));
            }
            finally
            {
                if (pin.IsAllocated) pin.Free();
            }
        }

        /// <summary>The raw handle (for the status-code tests of the binding).</summary>
        public ulong RawHandle { get { return h.Id; } }

        /// <summary>Does pending work without blocking (call once per frame).</summary>
        public void Poll() { Check("poll", Native.xrudp_poll(Id())); }

        /// <summary>Blocks up to timeoutMs for traffic or a timer, then polls.</summary>
        public void Wait(uint timeoutMs) { Check("wait", Native.xrudp_wait(Id(), timeoutMs)); }

        /// <summary>
        /// Takes the next event; a message's bytes go to buf (ev.Len of them). False when
        /// none is waiting. A message larger than buf throws BufferTooSmall and stays
        /// queued: ev.Len in the exception's status path is the size it needs.
        /// </summary>
        public bool NextEvent(out Event ev, byte[] buf)
        {
            var s = Native.xrudp_next_event(Id(), out ev, buf, new UIntPtr(buf == null ? 0u : (uint)buf.Length));
            if (s == Status.NoEvent) return false;
            Check("next_event", s);
            return true;
        }

        /// <summary>The same, returning the status instead of throwing.</summary>
        public Status TryNextEvent(out Event ev, byte[] buf)
        {
            return Native.xrudp_next_event(Id(), out ev, buf, new UIntPtr(buf == null ? 0u : (uint)buf.Length));
        }

        /// <summary>Queues len bytes of data on channel; QueueFull is backpressure (returned, not thrown).</summary>
        public Status Send(byte channel, byte[] data, int len)
        {
            if (data == null || len < 0 || len > data.Length) throw new ArgumentException("len");
            var s = Native.xrudp_send(Id(), channel, data, new UIntPtr((uint)len));
            if (s != Status.QueueFull) Check("send", s);
            return s;
        }

        public Stats GetStats()
        {
            Stats st;
            Check("stats", Native.xrudp_stats(Id(), out st));
            return st;
        }

        /// <summary>Closes gracefully with an application code the server sees.</summary>
        public void Disconnect(ushort code) { Check("disconnect", Native.xrudp_disconnect(Id(), code)); }

        /// <summary>Frees the connection (idempotent on this object).</summary>
        public void Dispose() { h.Dispose(); }

        ulong Id()
        {
            if (h.IsClosed) throw new ObjectDisposedException("Xrudp.Connection");
            return h.Id;
        }

        static void Check(string what, Status s)
        {
            if (s != Status.Ok) throw new XrudpException(what, s);
        }

        /// <summary>The status of freeing a raw handle (for misuse tests: a second free is InvalidHandle).</summary>
        public static Status FreeRaw(ulong raw) { return Native.xrudp_free(raw); }
    }
}
