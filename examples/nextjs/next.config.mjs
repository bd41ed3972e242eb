// next.config.mjs - nothing but what keeps `next build` to this folder and
// the npm registry: no lint step (no ESLint installed), no telemetry (set
// NEXT_TELEMETRY_DISABLED=1 too), no fonts fetched (none used).
/** @type {import('next').NextConfig} */
const nextConfig = {
    eslint: { ignoreDuringBuilds: true },
    poweredByHeader: false,
};
export default nextConfig;
