// The Tailwind set-up the seed's component leaves implicit (its classes).
module.exports = { plugins: { tailwindcss: {} } };
